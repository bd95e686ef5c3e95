"""Test-side helpers: play the API user and the kubelet against kmock, and wait for conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from ivrbot_operator import defaults as d

IVRBOTS = f"{d.GROUP}/{d.VERSION}/{d.PLURAL}"
NS = "voice"


def bot(name: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": d.API_VERSION, "kind": d.KIND,
        # kmock assigns no uid, generation or resourceVersion: set them as the API server would
        # (kopf's patches test resourceVersion; kmock never changes it, so a constant passes).
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": generation,
                     "resourceVersion": "1"},
        "spec": spec,
    }


def live(k: Any, resource: str) -> dict[str, dict[str, Any]]:
    """name -> current body of every non-deleted object of a resource."""
    out: dict[str, dict[str, Any]] = {}
    for (res, _ns, name), obj in list(k.objects.items()):
        if str(res) == resource or getattr(res, "plural", None) == resource.rsplit("/", 1)[-1]:
            if not obj.deleted:
                out[name] = dict(obj.raw)
    return out


def pods(k: Any) -> dict[str, dict[str, Any]]:
    return live(k, "v1/pods")


def ivrbot(k: Any, name: str) -> dict[str, Any]:
    return live(k, IVRBOTS)[name]


def condition(body: dict[str, Any], ctype: str) -> dict[str, Any]:
    """The condition of that type, or {} when there is none yet."""
    for c in body.get("status", {}).get("conditions", []):
        if c.get("type") == ctype:
            return dict(c)
    return {}


async def eventually(check: Callable[[], Any], what: str, attempts: int = 300) -> Any:
    """Poll until check() is truthy; bounded by attempts, not by wall-clock assertions."""
    last: Any = None
    for _ in range(attempts):
        try:
            last = check()
        except (KeyError, TypeError, IndexError):
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what} (last: {last!r})")


BOTS_PATH = f"/apis/{d.GROUP}/{d.VERSION}/namespaces/{NS}/{d.PLURAL}"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"


async def _call(k: Any, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh session per call: kmock's bundled client stops answering once an operator disconnects."""
    headers = {"Content-Type": "application/merge-patch+json"} if method == "patch" else {}
    url = str(k.url).rstrip("/") + path
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.request(method, url, json=body, headers=headers) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            assert resp.status < 300, f"{method} {path}: {resp.status} {data}"
            return data


async def create_bot(k: Any, body: dict[str, Any]) -> None:
    await _call(k, "post", BOTS_PATH, body)


async def patch_bot(k: Any, name: str, patch: dict[str, Any]) -> None:
    await _call(k, "patch", f"{BOTS_PATH}/{name}", patch)


async def delete_bot(k: Any, name: str) -> None:
    await _call(k, "delete", f"{BOTS_PATH}/{name}")


async def kubelet_ready(k: Any, name: str, node: str = "kind-worker", host_ip: str = "172.18.0.2") -> None:
    """Do what the scheduler and kubelet would: bind the pod and report it Ready."""
    await _call(k, "patch", f"{PODS_PATH}/{name}", {
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "hostIP": host_ip,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })


async def kubelet_all_ready(k: Any) -> None:
    for name, body in pods(k).items():
        if not any(c.get("type") == "Ready" for c in body.get("status", {}).get("conditions", [])):
            await kubelet_ready(k, name)
