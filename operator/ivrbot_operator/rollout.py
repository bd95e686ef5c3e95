"""Which pods to create and delete this round: a pure comparison of desired and observed.

Rules: scale down by deleting surplus ordinals; create missing ordinals; delete a
Failed pod (evicted, or its node lost it) at once, so it is recreated; replace an
outdated pod only when it is not serving (not ready) or when every other pod is ready
and nothing else is terminating, so a spec change rolls one pod at a time while the
rest keep taking calls. An ordinal without a desired manifest (its replacement's ports
are not reserved) is never replaced. A pod is only recreated once the old one (which
holds the same host ports) is gone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ivrbot_operator import defaults as d
from ivrbot_operator.ports import PodPorts


@dataclass(frozen=True)
class PodState:
    """What the operator knows of one existing bot pod (from its pod index)."""

    name: str
    ordinal: int
    spec_hash: str
    ready: bool
    terminating: bool
    node: str | None = None
    host_ip: str | None = None
    sip_port: int | None = None
    failed: bool = False
    ports: PodPorts | None = None

    @classmethod
    def from_pod(cls, body: Mapping[str, Any]) -> PodState | None:
        meta = body.get("metadata", {})
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        try:
            ordinal = int(labels[d.LABEL_ORDINAL])
        except (KeyError, ValueError):
            return None
        status = body.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        sip = annotations.get(d.ANNOTATION_SIP_PORT)
        ports: PodPorts | None = None
        try:
            ports = PodPorts.from_status(json.loads(annotations[d.ANNOTATION_PORTS]))
        except (KeyError, TypeError, ValueError, AttributeError):
            ports = None
        return cls(
            name=meta.get("name", ""),
            ordinal=ordinal,
            spec_hash=annotations.get(d.ANNOTATION_SPEC_HASH, ""),
            ready=ready and not meta.get("deletionTimestamp"),
            terminating=bool(meta.get("deletionTimestamp")),
            node=(body.get("spec") or {}).get("nodeName"),
            host_ip=status.get("hostIP"),
            sip_port=int(sip) if sip and sip.isdigit() else None,
            # Evicted pods end in phase Failed; with restartPolicy Always nothing brings them back.
            failed=status.get("phase") in ("Failed", "Succeeded"),
            ports=ports,
        )


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.create and not self.delete


def plan(replicas: int, desired: Mapping[int, dict[str, Any]], observed: Mapping[int, PodState]) -> Plan:
    """`desired`: manifests of the ordinals whose (current or replacement) ports are reserved."""
    result = Plan()
    for ordinal, pod in sorted(observed.items()):
        if not pod.terminating and (ordinal >= replicas or pod.failed):
            result.delete.append(pod.name)
    for ordinal, manifest in sorted(desired.items()):
        if ordinal < replicas and ordinal not in observed:
            result.create.append(manifest)

    def outdated(ordinal: int, pod: PodState) -> bool:
        want = desired.get(ordinal)
        return want is not None and pod.spec_hash != want["metadata"]["annotations"][d.ANNOTATION_SPEC_HASH]

    in_range = {o: p for o, p in observed.items() if o < replicas and not p.failed}
    old = [(o, p) for o, p in sorted(in_range.items()) if not p.terminating and outdated(o, p)]
    # Outdated pods that serve nothing are replaced at once.
    result.delete += [p.name for _, p in old if not p.ready]
    serving_old = [(o, p) for o, p in old if p.ready]
    busy = any(p.terminating or p.failed for p in observed.values()) or any(
        not p.ready for o, p in in_range.items() if not outdated(o, p)) or any(
        o not in observed for o in desired if o < replicas)
    if serving_old and not busy and not result.delete:
        result.delete.append(serving_old[-1][1].name)  # highest ordinal first, like a StatefulSet
    return result
