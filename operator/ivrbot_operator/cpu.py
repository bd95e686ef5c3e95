"""llama-server's thread count from its container's CPU, not the node's.

Left alone, llama.cpp starts one thread per CPU it sees: the node's, 32 or 64 on a big one, for a
container that asked for half a core. Its threads meet at a barrier per token, so one thread the
kernel (or a CFS quota) holds back stalls all of them; measured here, a reply's first token took
1.67 s with two threads on two busy cores against 0.44 s with one (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTOR: dict[str | None, Decimal] = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** (i + 1) for i, suffix in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{suffix: Decimal(1024) ** (i + 1) for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
THREAD_FLAGS = ("-t", "--threads")


def cpu_cores(quantity: object) -> Decimal | None:
    """A Kubernetes CPU quantity (``500m``, ``2``, ``1.5``, or a YAML number) in cores; None if it is none."""
    if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
        return None
    match = _QUANTITY.match(str(quantity).strip())
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _FACTOR[match.group(2)]
    except InvalidOperation:
        return None


def llama_threads(resources: dict[str, Any], args: list[str]) -> int | None:
    """Threads for llama-server: its CPU limit, else its request, in whole cores (at least 1).

    None when the user's own ``llm.args`` set the threads, or no CPU figure is given.
    """
    if any(a in THREAD_FLAGS or a.startswith("--threads=") for a in args):
        return None
    for kind in ("limits", "requests"):
        section = resources.get(kind)
        cores = cpu_cores(section.get("cpu")) if isinstance(section, dict) else None
        if cores is not None and cores > 0:
            return max(1, min(256, math.floor(cores)))
    return None
