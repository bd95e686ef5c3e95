"""Cluster-wide host-port allocator for hostNetwork bot pods (the Agones pattern).

Every bot pod gets one contiguous, even-aligned block from the operator's pool:
SIP, HTTP, Vosk, Piper, llama ports, one spare (keeps RTP even), then its RTP block.
Blocks are unique across all IVRBots in the cluster, so two pods never collide on
whatever node they land. Pure and synchronous: the operator records each pod's block on
the pod itself (an annotation, written with the pod) and in its IVRBot's status, and
rebuilds this from both at start, so a crash between the two loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SINGLE_PORTS = 6  # sip, http, vosk, piper, llama, spare (keeps the RTP block even-aligned)


def block_size(rtp_ports: int) -> int:
    return SINGLE_PORTS + rtp_ports


@dataclass(frozen=True)
class PortPool:
    min: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max <= 65535:
            raise ValueError(f"port pool {self.min}-{self.max} is not a valid range")

    @property
    def size(self) -> int:
        return self.max - self.min + 1

    def contains(self, port: int) -> bool:
        return self.min <= port <= self.max

    def __str__(self) -> str:
        return f"{self.min}-{self.max}"


@dataclass(frozen=True)
class PodPorts:
    """One pod's ports; `base` is the first port of its block."""

    base: int
    rtp_ports: int
    fixed_sip: int | None = None

    @property
    def sip(self) -> int:
        return self.fixed_sip if self.fixed_sip is not None else self.base

    @property
    def http(self) -> int:
        return self.base + 1

    @property
    def vosk(self) -> int:
        return self.base + 2

    @property
    def piper(self) -> int:
        return self.base + 3

    @property
    def llama(self) -> int:
        return self.base + 4

    @property
    def rtp_min(self) -> int:
        return self.base + SINGLE_PORTS

    @property
    def rtp_max(self) -> int:
        return self.base + SINGLE_PORTS + self.rtp_ports - 1

    @property
    def end(self) -> int:
        """One past the last port of the block."""
        return self.base + block_size(self.rtp_ports)

    def all_ports(self) -> set[int]:
        ports = set(range(self.base, self.end))
        if self.fixed_sip is not None:
            ports.add(self.fixed_sip)
        return ports

    def to_status(self) -> dict[str, int]:
        return {
            "sipPort": self.sip, "httpPort": self.http, "voskPort": self.vosk, "piperPort": self.piper,
            "llamaPort": self.llama, "rtpPortMin": self.rtp_min, "rtpPortMax": self.rtp_max,
        }

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> PodPorts:
        """Inverse of to_status; raises ValueError on an entry this allocator could not have written."""
        base = int(entry["httpPort"]) - 1
        rtp_min, rtp_max, sip = int(entry["rtpPortMin"]), int(entry["rtpPortMax"]), int(entry["sipPort"])
        ports = cls(base=base, rtp_ports=rtp_max - rtp_min + 1, fixed_sip=None if sip == base else sip)
        if ports.to_status() != {k: int(entry[k]) for k in ports.to_status()}:
            raise ValueError(f"inconsistent port allocation {dict(entry)!r}")
        return ports


OwnerKey = tuple[str, str]  # (namespace, IVRBot name)


@dataclass(frozen=True)
class Shortage:
    pods: int
    ports_needed: int
    ports_free: int

    @property
    def ports_missing(self) -> int:
        return max(self.ports_needed - self.ports_free, 0)

    def __str__(self) -> str:
        if self.ports_missing:
            return (f"{self.pods} pod(s) need {self.ports_needed} ports but the pool has {self.ports_free} free:"
                    f" {self.ports_missing} ports missing")
        return (f"{self.pods} pod(s) need {self.ports_needed} ports; the pool has {self.ports_free} free"
                " but no contiguous block large enough")


def fits(ports: PodPorts, rtp_ports: int, fixed_sip: int | None) -> bool:
    """A block made for an older spec (other RTP size or fixed SIP port) must be replaced."""
    return ports.rtp_ports == rtp_ports and ports.fixed_sip == fixed_sip


class PortAllocator:
    """First-fit allocator over one pool; every method keeps blocks pairwise disjoint.

    An ordinal holds its current block (what its pod uses) and, during a rollout to a new
    block size or SIP port, a replacement block reserved before the old pod is deleted:
    a serving pod is only replaced once its successor is sure to fit.
    """

    def __init__(self, pool: PortPool) -> None:
        self.pool = pool
        self._pods: dict[OwnerKey, dict[int, PodPorts]] = {}
        self._next: dict[OwnerKey, dict[int, PodPorts]] = {}
        self._fixed: dict[OwnerKey, int] = {}

    # --- queries -------------------------------------------------------------------
    def owners(self) -> set[OwnerKey]:
        return set(self._pods) | set(self._fixed) | set(self._next)

    def of(self, owner: OwnerKey) -> dict[int, PodPorts]:
        return dict(self._pods.get(owner, {}))

    def replacements(self, owner: OwnerKey) -> dict[int, PodPorts]:
        return dict(self._next.get(owner, {}))

    def fixed_sip(self, owner: OwnerKey) -> int | None:
        return self._fixed.get(owner)

    def _blocks(self) -> list[tuple[OwnerKey, int, PodPorts]]:
        return [(owner, o, p) for table in (self._pods, self._next) for owner, pods in table.items()
                for o, p in pods.items()]

    def _used(self) -> list[tuple[int, int]]:
        blocks = self._blocks()
        spans = [(p.base, p.end) for _, _, p in blocks]
        fixed = set(self._fixed.values()) | {p.fixed_sip for _, _, p in blocks if p.fixed_sip is not None}
        spans += [(port, port + 1) for port in fixed]
        return sorted(spans)

    def free_count(self) -> int:
        used = {port for start, end in self._used() for port in range(start, end)}
        return self.pool.size - len({p for p in used if self.pool.contains(p)})

    def _is_free(self, start: int, end: int) -> bool:
        return self.pool.contains(start) and self.pool.contains(end - 1) and all(
            e <= start or s >= end for s, e in self._used())

    def _new_block(self, rtp_ports: int, fixed: int | None) -> PodPorts | None:
        """The lowest free block for a pod with `rtp_ports` RTP ports, or None when none fits."""
        base = self._first_fit(block_size(rtp_ports))
        return None if base is None else PodPorts(base=base, rtp_ports=rtp_ports, fixed_sip=fixed)

    def _first_fit(self, size: int) -> int | None:
        candidate = self.pool.min + (self.pool.min % 2)
        for start, end in self._used():
            if candidate + size <= start:
                break
            if end > candidate:
                candidate = end + (end % 2)
        return candidate if candidate + size - 1 <= self.pool.max else None

    def sip_conflict(self, owner: OwnerKey, port: int) -> str | None:
        """Why `port` cannot be this IVRBot's fixed SIP port, or None when it can."""
        for other, fixed in sorted(self._fixed.items()):
            if fixed == port and other != owner:
                return f"spec.sip.port {port} is the fixed SIP port of IVRBot {other[0]}/{other[1]}"
        for other, ordinal, ports in sorted(self._blocks(), key=lambda b: (b[0], b[1], b[2].base)):
            inside = ports.base <= port < ports.end
            if other != owner and (inside or ports.fixed_sip == port):
                return (f"spec.sip.port {port} is held by IVRBot {other[0]}/{other[1]}"
                        f" (pod {other[1]}-{ordinal}, ports {ports.base}-{ports.end - 1})")
            if other == owner and inside:
                return (f"spec.sip.port {port} lies inside this IVRBot's own pod {owner[1]}-{ordinal}"
                        f" (ports {ports.base}-{ports.end - 1}); choose a pool port outside its blocks")
        return None

    # --- changes -------------------------------------------------------------------
    def reserve_fixed_sip(self, owner: OwnerKey, port: int | None) -> bool:
        """Hold (or drop, with None) an IVRBot-wide SIP port; False (nothing changed) if it is taken."""
        if self._fixed.get(owner) == port:
            return True
        if port is not None and self.sip_conflict(owner, port) is not None:
            return False
        self._fixed.pop(owner, None)
        if port is not None:
            self._fixed[owner] = port
        return True

    def allocate(self, owner: OwnerKey, ordinals: Iterable[int], rtp_ports: int) -> Shortage | None:
        """Give every listed ordinal a block of the right size (keeping existing ones); None when all fit."""
        pods = self._pods.setdefault(owner, {})
        fixed = self._fixed.get(owner)
        short = 0
        for ordinal in sorted(set(ordinals)):
            if ordinal in pods:
                continue
            block = self._new_block(rtp_ports, fixed)
            if block is None:
                short += 1
                continue
            pods[ordinal] = block
        self._tidy(owner)
        if short:
            return Shortage(pods=short, ports_needed=short * block_size(rtp_ports), ports_free=self.free_count())
        return None

    def sync(self, owner: OwnerKey, replicas: int, rtp_ports: int, live: Iterable[int]) -> Shortage | None:
        """One reconcile round of allocation. `live`: ordinals that still have a pod object.

        A gone pod's block goes back when it is surplus or no longer fits (its replacement,
        if reserved, becomes current); a missing ordinal gets a block; a live pod whose block
        no longer fits gets a replacement block reserved, highest ordinal first. Returns the
        shortage when an ordinal has no block, or when a rollout cannot start for want of one.
        """
        alive = set(live)
        fixed = self._fixed.get(owner)
        pods = self._pods.setdefault(owner, {})
        nxt = self._next.setdefault(owner, {})
        for o, ports in list(nxt.items()):
            current = pods.get(o)
            if o >= replicas or not fits(ports, rtp_ports, fixed) or (
                    current is not None and fits(current, rtp_ports, fixed)):
                del nxt[o]
            elif o not in alive:
                pods[o] = nxt.pop(o)
        for o, ports in list(pods.items()):
            if o not in alive and (o >= replicas or not fits(ports, rtp_ports, fixed)):
                del pods[o]
        shortage = self.allocate(owner, range(replicas), rtp_ports)
        pods = self._pods.setdefault(owner, {})
        nxt = self._next.setdefault(owner, {})
        stale = [o for o in sorted(pods, reverse=True) if o < replicas and not fits(pods[o], rtp_ports, fixed)]
        waiting = 0
        for o in stale:
            if o in nxt:
                continue
            block = self._new_block(rtp_ports, fixed)
            if block is None:
                waiting += 1
                continue
            nxt[o] = block
        self._tidy(owner)
        if shortage is None and waiting and not any(o in nxt for o in stale):
            size = block_size(rtp_ports)
            shortage = Shortage(pods=waiting, ports_needed=waiting * size, ports_free=self.free_count())
        return shortage

    def _tidy(self, owner: OwnerKey) -> None:
        for table in (self._pods, self._next):
            if not table.get(owner, True):
                table.pop(owner, None)

    def release(self, owner: OwnerKey, ordinals: Iterable[int]) -> None:
        for ordinal in ordinals:
            self._pods.get(owner, {}).pop(ordinal, None)
            self._next.get(owner, {}).pop(ordinal, None)
        self._tidy(owner)

    def release_owner(self, owner: OwnerKey) -> None:
        self._pods.pop(owner, None)
        self._next.pop(owner, None)
        self._fixed.pop(owner, None)

    def adopt(self, owner: OwnerKey, pods: Mapping[int, PodPorts]) -> list[int]:
        """Take the blocks live pods hold (from their annotation) as they are; they are on the
        nodes whatever the allocator thinks. Returns ordinals that overlap a block held already."""
        clashes = [o for o, p in sorted(pods.items()) if not self._is_free(p.base, p.end)]
        self._pods.setdefault(owner, {}).update(pods)
        for ports in pods.values():
            if ports.fixed_sip is not None:
                self._fixed.setdefault(owner, ports.fixed_sip)
        self._tidy(owner)
        return clashes

    def restore(self, owner: OwnerKey, pods: Mapping[int, PodPorts]) -> list[int]:
        """Re-adopt allocations read from status; returns ordinals refused because they overlap others."""
        refused: list[int] = []
        held = self._pods.setdefault(owner, {})
        for ordinal, ports in sorted(pods.items()):
            if ordinal in held:
                continue
            if self._is_free(ports.base, ports.end) and (
                    ports.fixed_sip is None or self._fixed.get(owner, ports.fixed_sip) == ports.fixed_sip
                    or self.sip_conflict(owner, ports.fixed_sip) is None):
                held[ordinal] = ports
                if ports.fixed_sip is not None:
                    self._fixed.setdefault(owner, ports.fixed_sip)
            else:
                refused.append(ordinal)
        self._tidy(owner)
        return refused


def rebuild(
    pool: PortPool,
    live: Mapping[OwnerKey, Mapping[int, PodPorts]],
    recorded: Mapping[OwnerKey, Mapping[int, PodPorts]],
) -> tuple[PortAllocator, dict[OwnerKey, list[int]]]:
    """The allocator at start: every live pod's block first (the pods hold those ports on their
    nodes, whether or not status was written before a crash), then the blocks status records
    for ordinals without a pod. Returns the refused (overlapping) status ordinals per owner."""
    alloc = PortAllocator(pool)
    for owner, pods in sorted(live.items()):
        alloc.adopt(owner, pods)
    refused: dict[OwnerKey, list[int]] = {}
    for owner, pods in sorted(recorded.items()):
        dropped = alloc.restore(owner, pods)
        if dropped:
            refused[owner] = dropped
    return alloc, refused
