"""A call's garbage goes back when the call ends, not when the collector gets round to it.

A call's pipeline is a web of reference cycles (Pipecat's processors are linked both ways, their
tasks and event handlers point back at them), so the frames and audio buffers a call held are
freed only by a full collection, which CPython runs rarely. Measured over 80 assistant calls
(docs/benchmarks.md, Soak): up to 107 MB of such garbage sat in the heap at once, and glibc kept
the heap at its high-water mark (RSS 218 -> 441 MB), while the native memory in use right after a
collection was 34.9 MB at every sample. So each call's end runs a collection and hands free heap
pages back to the OS; the objects that live as long as the process (modules, models, settings)
are frozen out of the collector once the bot is up, so that collection only walks what calls left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


@dataclass(frozen=True)
class Collected:
    objects: int
    seconds: float


def freeze_long_lived() -> None:
    """Move everything alive now out of the collector's sight (``gc.freeze``): the process's own state."""
    gc.collect()
    gc.freeze()


def release_call_garbage() -> Collected:
    """Collect the cycles an ended call left and return the freed heap pages to the OS."""
    t0 = time.perf_counter()
    n = gc.collect()
    if _TRIM is not None:
        _TRIM(0)
    return Collected(n, time.perf_counter() - t0)
