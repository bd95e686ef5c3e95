"""Whether a sidecar answers, for ``/readyz``: HTTP sidecars on ``/health``, the others on a TCP connect."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

PROBE_TIMEOUT_S = 1.5


async def reachable(url: str) -> bool:
    """True when the sidecar at ``url`` (http(s):// or ws://) answers within the probe timeout."""
    parts = urlsplit(url)
    if parts.scheme.startswith("http"):
        try:
            base = f"{parts.scheme}://{parts.netloc}"
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as s,
                s.get(f"{base}/health") as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    w.close()
    return True
