"""Test-side helpers: play the API user and the kubelet against kmock, and wait for conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from ivrbot_operator import defaults as d
from ivrbot_operator.dispatcher import parse_table

IVRBOTS = f"{d.GROUP}/{d.VERSION}/{d.PLURAL}"
NS = "voice"


MODELS_VOLUME = {"hostPath": {"path": "/var/lib/ivrbot/models"}}


def bot(name: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    """An IVRBot; with a models volume unless the test names one (or None for the refused default)."""
    spec.setdefault("modelsVolume", MODELS_VOLUME)
    if spec["modelsVolume"] is None:
        del spec["modelsVolume"]
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


async def kubelet_evict(k: Any, name: str) -> None:
    """What the kubelet does to an evicted pod: phase Failed, not ready, the object left behind."""
    await _call(k, "patch", f"{PODS_PATH}/{name}", {
        "status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
                   "conditions": [{"type": "Ready", "status": "False"}]},
    })


async def kubelet_all_ready(k: Any) -> None:
    for name, body in pods(k).items():
        if not any(c.get("type") == "Ready" for c in body.get("status", {}).get("conditions", [])):
            await kubelet_ready(k, name)


def pod_ports(pod: dict[str, Any]) -> set[int]:
    """Every host port a bot pod binds, read from what its containers are told."""
    bot = next(c for c in pod["spec"]["containers"] if c["name"] == "bot")
    env = {e["name"]: e.get("value") for e in bot["env"]}
    ports = {int(env["IVRBOT_SIP_PORT"]), int(env["IVRBOT_HTTP_PORT"])}
    ports |= set(range(int(env["IVRBOT_RTP_PORT_MIN"]), int(env["IVRBOT_RTP_PORT_MAX"]) + 1))
    for key in ("IVRBOT_VOSK_URL", "IVRBOT_PIPER_URL", "IVRBOT_LLAMA_URL"):
        ports.add(int(env[key].rsplit(":", 1)[1].split("/")[0]))
    return ports


class OpenSipsMI:
    """A loopback stand-in for OpenSIPS's mi_http (JSON-RPC): `ds_reload` re-reads the IVRBot's
    dispatcher ConfigMap as OpenSIPS re-reads its mounted db_text file, `ds_list` answers in the
    OpenSIPS 3.x/4.x shape. Modes: "ok"; "stale" (reload answers OK but keeps the old table, as
    db_text's cache did); "html" (a wrong MI path: an HTML page); "down" (HTTP 503, no JSON)."""

    def __init__(self, k: Any, configmap: str) -> None:
        self.k, self.configmap = k, configmap
        self.mode = "ok"
        self.loaded: dict[int, list[str]] = {}
        self.calls: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body.get("method"))
        if self.mode == "html":
            return web.Response(status=404, text="<html><body><h1>404 Not Found</h1></body></html>",
                                content_type="text/html")
        if self.mode == "down":
            return web.Response(status=503, text="Service Unavailable")
        if body.get("method") == "ds_reload":
            if self.mode == "ok":
                table = live(self.k, "v1/configmaps").get(self.configmap, {}).get("data", {}).get("dispatcher", "")
                self.loaded = {}
                for row in parse_table(table):
                    self.loaded.setdefault(int(row[1]), []).append(row[2])
            return web.json_response({"jsonrpc": "2.0", "result": "OK", "id": body.get("id")})
        if body.get("method") == "ds_list":
            sets = [{"id": set_id, "Destinations": [{"URI": uri, "state": "Active", "first_hit_counter": 0}
                                                    for uri in uris]}
                    for set_id, uris in sorted(self.loaded.items()) if uris]
            part: dict[str, Any] = {"name": "default", **({"SETS": sets} if sets else {})}
            return web.json_response({"jsonrpc": "2.0", "result": {"PARTITIONS": [part]}, "id": body.get("id")})
        return web.json_response({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"},
                                  "id": body.get("id")})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/mi", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/mi"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
