"""Kubernetes-shaped status conditions (metav1.Condition), merged without losing transition times."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def merge_conditions(
    old: Iterable[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """lastTransitionTime moves only when a condition's status flips."""
    previous = {c.get("type"): c for c in old or [] if isinstance(c, Mapping)}
    merged: list[dict[str, Any]] = []
    for cond in new:
        status = "True" if cond.status else "False"
        before = previous.get(cond.type)
        since = before.get("lastTransitionTime") if before and before.get("status") == status else None
        entry: dict[str, Any] = {
            "type": cond.type, "status": status, "reason": cond.reason, "message": cond.message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged
