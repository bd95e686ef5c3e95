"""Cluster-wide host-port allocator for hostNetwork bot pods (the Agones pattern).

Every bot pod gets one contiguous, even-aligned block from the operator's pool:
SIP, HTTP, Vosk, Piper, llama ports, one spare (keeps RTP even), then its RTP block.
Blocks are unique across all IVRBots in the cluster, so two pods never collide on
whatever node they land. Pure and synchronous: the operator persists the result in
each IVRBot's status and rebuilds this from all of them at start.
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


class PortAllocator:
    """First-fit allocator over one pool; every method keeps blocks pairwise disjoint."""

    def __init__(self, pool: PortPool) -> None:
        self.pool = pool
        self._pods: dict[OwnerKey, dict[int, PodPorts]] = {}
        self._fixed: dict[OwnerKey, int] = {}

    # --- queries -------------------------------------------------------------------
    def owners(self) -> set[OwnerKey]:
        return set(self._pods) | set(self._fixed)

    def of(self, owner: OwnerKey) -> dict[int, PodPorts]:
        return dict(self._pods.get(owner, {}))

    def fixed_sip(self, owner: OwnerKey) -> int | None:
        return self._fixed.get(owner)

    def _used(self) -> list[tuple[int, int]]:
        spans = [(p.base, p.end) for pods in self._pods.values() for p in pods.values()]
        fixed = set(self._fixed.values())
        fixed |= {p.fixed_sip for pods in self._pods.values() for p in pods.values() if p.fixed_sip is not None}
        spans += [(port, port + 1) for port in fixed]
        return sorted(spans)

    def free_count(self) -> int:
        used = {port for start, end in self._used() for port in range(start, end)}
        return self.pool.size - len({p for p in used if self.pool.contains(p)})

    def _is_free(self, start: int, end: int) -> bool:
        return self.pool.contains(start) and self.pool.contains(end - 1) and all(
            e <= start or s >= end for s, e in self._used())

    def _first_fit(self, size: int) -> int | None:
        candidate = self.pool.min + (self.pool.min % 2)
        for start, end in self._used():
            if candidate + size <= start:
                break
            if end > candidate:
                candidate = end + (end % 2)
        return candidate if candidate + size - 1 <= self.pool.max else None

    # --- changes -------------------------------------------------------------------
    def reserve_fixed_sip(self, owner: OwnerKey, port: int | None) -> bool:
        """Hold (or drop, with None) an IVRBot-wide SIP port; False if another owner's block has it."""
        if self._fixed.get(owner) == port:
            return True
        self._fixed.pop(owner, None)
        if port is None:
            return True
        if not self._is_free(port, port + 1):
            return False
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
            base = self._first_fit(block_size(rtp_ports))
            if base is None:
                short += 1
                continue
            pods[ordinal] = PodPorts(base=base, rtp_ports=rtp_ports, fixed_sip=fixed)
        if not pods:
            self._pods.pop(owner, None)
        if short:
            return Shortage(pods=short, ports_needed=short * block_size(rtp_ports), ports_free=self.free_count())
        return None

    def release(self, owner: OwnerKey, ordinals: Iterable[int]) -> None:
        pods = self._pods.get(owner, {})
        for ordinal in ordinals:
            pods.pop(ordinal, None)
        if not pods:
            self._pods.pop(owner, None)

    def release_owner(self, owner: OwnerKey) -> None:
        self._pods.pop(owner, None)
        self._fixed.pop(owner, None)

    def restore(self, owner: OwnerKey, pods: Mapping[int, PodPorts]) -> list[int]:
        """Re-adopt allocations read from status; returns ordinals refused because they overlap others."""
        refused: list[int] = []
        held = self._pods.setdefault(owner, {})
        for ordinal, ports in sorted(pods.items()):
            if ports.fixed_sip is not None and self._fixed.setdefault(owner, ports.fixed_sip) != ports.fixed_sip:
                refused.append(ordinal)
            elif self._is_free(ports.base, ports.end):
                held[ordinal] = ports
            else:
                refused.append(ordinal)
        if not held:
            self._pods.pop(owner, None)
        return refused
