"""Create, scale, spec change, delete, restart, invalid spec, exhaustion: the operator against kmock."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp import web
from opsim import (
    IVRBOTS,
    bot,
    condition,
    create_bot,
    delete_bot,
    eventually,
    ivrbot,
    kubelet_all_ready,
    kubelet_ready,
    live,
    patch_bot,
    pods,
)

from ivrbot_operator import defaults as d
from ivrbot_operator.dispatcher import parse_table
from ivrbot_operator.ports import PortPool


def env_of(pod: dict[str, Any], name: str) -> str | None:
    bot_container = next(c for c in pod["spec"]["containers"] if c["name"] == "bot")
    return next((e.get("value") for e in bot_container["env"] if e["name"] == name), None)


def ready_status(k: Any, name: str, generation: int = 1) -> Any:
    body = ivrbot(k, name)
    cond = condition(body, "Ready")
    if cond.get("status") == "True" and body["status"].get("observedGeneration") == generation:
        return body["status"]
    return None


def pod_requests(k: Any, method: str) -> int:
    return sum(1 for r in list(k) if str(r.method).upper().endswith(method) and "/pods" in str(r.url))


async def test_create_makes_pods_with_disjoint_ports_and_ready_status(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: len(pods(kmock)) == 2, "two pods")
        made = pods(kmock)
        assert set(made) == {"alpha-0", "alpha-1"}
        for body in made.values():
            assert body["spec"]["hostNetwork"] is True
            assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-alpha"
        await kubelet_all_ready(kmock)
        status = await eventually(lambda: ready_status(kmock, "alpha"), "Ready=True")
        assert status["readyReplicas"] == 2 and status["replicasText"] == "2/2"
        assert condition(ivrbot(kmock, "alpha"), "PortsAllocated")["status"] == "True"
        allocs = status["allocations"]
        assert [a["pod"] for a in allocs] == ["alpha-0", "alpha-1"]
        assert allocs[0]["hostIP"] == "172.18.0.2" and allocs[0]["node"] == "kind-worker"
        spans = [set(range(a["sipPort"], a["rtpPortMax"] + 1)) for a in allocs]
        assert not spans[0] & spans[1]
        for a in allocs:
            pod = pods(kmock)[a["pod"]]
            assert env_of(pod, "IVRBOT_SIP_PORT") == str(a["sipPort"])
            assert env_of(pod, "IVRBOT_RTP_PORT_MIN") == str(a["rtpPortMin"])
        cm = await eventually(lambda: live(kmock, "v1/configmaps").get("alpha-dispatcher"), "dispatcher configmap")
        rows = await eventually(lambda: len(parse_table(
            live(kmock, "v1/configmaps")["alpha-dispatcher"]["data"]["dispatcher"])) == 2 and parse_table(
            live(kmock, "v1/configmaps")["alpha-dispatcher"]["data"]["dispatcher"]), "two destinations")
        assert sorted(r[2] for r in rows) == sorted(f"sip:172.18.0.2:{a['sipPort']}" for a in allocs)
        assert cm["metadata"]["ownerReferences"][0]["kind"] == d.KIND


async def test_scale_up_and_down_returns_ports(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("alpha", replicas=1))
        await eventually(lambda: len(pods(kmock)) == 1, "one pod")
        await patch_bot(kmock, "alpha", {"spec": {"replicas": 3}, "metadata": {"generation": 2}})
        await eventually(lambda: set(pods(kmock)) == {"alpha-0", "alpha-1", "alpha-2"}, "three pods")
        await kubelet_all_ready(kmock)
        status = await eventually(lambda: ready_status(kmock, "alpha", 2), "3/3 ready")
        assert len(status["allocations"]) == 3
        await patch_bot(kmock, "alpha", {"spec": {"replicas": 1}, "metadata": {"generation": 3}})
        await eventually(lambda: set(pods(kmock)) == {"alpha-0"}, "scaled down to one pod")
        status = await eventually(lambda: ready_status(kmock, "alpha", 3), "1/1 ready")
        assert [a["pod"] for a in status["allocations"]] == ["alpha-0"]
        # The freed ports go to the next IVRBot: its first pod takes alpha-1's old block.
        await create_bot(kmock, bot("beta", replicas=1))
        await eventually(lambda: "beta-0" in pods(kmock), "beta pod")
        beta = await eventually(lambda: ivrbot(kmock, "beta")["status"]["allocations"], "beta allocated")
        assert beta[0]["sipPort"] == status["allocations"][0]["rtpPortMax"] + 1


async def test_spec_change_rolls_one_pod_at_a_time(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("alpha", replicas=2, assistant={"greeting": "Hello"}))
        await eventually(lambda: len(pods(kmock)) == 2, "two pods")
        await kubelet_all_ready(kmock)
        await eventually(lambda: ready_status(kmock, "alpha"), "ready")
        await patch_bot(kmock, "alpha", {"spec": {"assistant": {"greeting": "Hi there"}},
                                         "metadata": {"generation": 2}})
        # The highest ordinal goes first; the other pod keeps serving with the old spec.
        await eventually(lambda: env_of(pods(kmock)["alpha-1"], "IVRBOT_GREETING") == "Hi there", "alpha-1 new")
        for _ in range(10):  # several reconcile rounds: nothing else moves while alpha-1 is not ready
            await asyncio.sleep(0.1)
            assert env_of(pods(kmock)["alpha-0"], "IVRBOT_GREETING") == "Hello"
        cond = condition(ivrbot(kmock, "alpha"), "Ready")
        assert cond["status"] == "False"
        await kubelet_ready(kmock, "alpha-1")
        await eventually(lambda: env_of(pods(kmock)["alpha-0"], "IVRBOT_GREETING") == "Hi there", "alpha-0 new")
        await kubelet_ready(kmock, "alpha-0")
        status = await eventually(lambda: ready_status(kmock, "alpha", 2), "ready at generation 2")
        assert status["updatedReplicas"] == 2
        assert pod_requests(kmock, "DELETE") == 2


async def test_delete_removes_pods_and_frees_ports(kmock: Any, start_operator: Any) -> None:
    async with start_operator() as op:
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: len(pods(kmock)) == 2, "two pods")
        assert d.GROUP + "/finalizer" in ivrbot(kmock, "alpha")["metadata"]["finalizers"]
        await delete_bot(kmock, "alpha")
        await eventually(lambda: not pods(kmock), "pods deleted")
        await eventually(lambda: "alpha" not in live(kmock, IVRBOTS), "IVRBot gone after its finalizer")
        runtime = await op.stop()
    assert runtime is not None
    assert runtime.allocator.owners() == set()
    assert runtime.allocator.free_count() == runtime.config.pool.size


async def test_restart_changes_nothing_and_rebuilds_allocations(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        # "gone" takes the pool's first block, "alpha" the next two; deleting "gone" leaves a hole
        # at the start, so an allocator that forgot "alpha" would move it there after a restart.
        await create_bot(kmock, bot("gone", replicas=1))
        await eventually(lambda: "gone-0" in pods(kmock), "gone pod")
        gone = await eventually(lambda: ivrbot(kmock, "gone")["status"]["allocations"], "gone allocated")
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: {"alpha-0", "alpha-1"} <= set(pods(kmock)), "alpha pods")
        await kubelet_all_ready(kmock)
        before = await eventually(lambda: ready_status(kmock, "alpha"), "ready")
        await delete_bot(kmock, "gone")
        await eventually(lambda: "gone" not in live(kmock, IVRBOTS), "gone deleted")
    creates, deletes = pod_requests(kmock, "POST"), pod_requests(kmock, "DELETE")
    pods_before = {n: p["metadata"]["annotations"] for n, p in pods(kmock).items()}
    async with start_operator():
        await create_bot(kmock, bot("beta", replicas=1))
        await eventually(lambda: "beta-0" in pods(kmock), "beta pod")
        beta = await eventually(lambda: ivrbot(kmock, "beta")["status"]["allocations"], "beta allocated")
        for _ in range(10):  # several reconcile rounds of the restarted operator
            await asyncio.sleep(0.1)
        assert ready_status(kmock, "alpha")["allocations"] == before["allocations"]
    assert pod_requests(kmock, "POST") == creates + 1  # only beta's pod
    assert pod_requests(kmock, "DELETE") == deletes
    assert {n: pods(kmock)[n]["metadata"]["annotations"] for n in pods_before} == pods_before
    # The restarted allocator knew alpha's blocks: beta got the hole "gone" left.
    assert beta[0]["sipPort"] == gone[0]["sipPort"] and beta[0]["rtpPortMax"] == gone[0]["rtpPortMax"]


def events(k: Any) -> list[dict[str, Any]]:
    return list(live(k, "v1/events").values())


async def test_invalid_spec_is_refused_with_condition_and_event(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("bad", replicas=1, rtp={"portsPerPod": 7}))
        cond = await eventually(lambda: condition(ivrbot(kmock, "bad"), "SpecValid"), "SpecValid condition")
        assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
        assert "spec.rtp.portsPerPod" in cond["message"]
        event = await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "InvalidSpec"], "event")
        assert "spec.rtp.portsPerPod" in event[0]["message"] and event[0]["type"] == "Warning"
        assert not pods(kmock)
        # A valid IVRBot whose update breaks a rule keeps its pods as they are.
        await create_bot(kmock, bot("good", replicas=1))
        await eventually(lambda: "good-0" in pods(kmock), "good pod")
        before = pods(kmock)["good-0"]["metadata"]["annotations"]
        await patch_bot(kmock, "good", {"spec": {"sip": {"trustedProxies": ["10.0.0.0/33"]}},
                                        "metadata": {"generation": 2}})
        cond = await eventually(lambda: condition(ivrbot(kmock, "good"), "SpecValid")["status"] == "False"
                                and condition(ivrbot(kmock, "good"), "SpecValid"), "refused update")
        assert "spec.sip.trustedProxies[0]" in cond["message"]
        assert pods(kmock)["good-0"]["metadata"]["annotations"] == before


async def test_exhausted_pool_says_how_many_ports_are_missing(kmock: Any, start_operator: Any) -> None:
    async with start_operator(pool=PortPool(21000, 21049)):  # 50 ports; a pod takes 6 + 16 = 22
        await create_bot(kmock, bot("alpha", replicas=3))
        cond = await eventually(lambda: condition(ivrbot(kmock, "alpha"), "PortsAllocated")["status"] == "False"
                                and condition(ivrbot(kmock, "alpha"), "PortsAllocated"), "exhausted")
        assert cond["reason"] == "PoolExhausted"
        assert "16 ports missing" in cond["message"]
        await eventually(lambda: set(pods(kmock)) == {"alpha-0", "alpha-1"}, "the pods that fit")
        await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "PoolExhausted"], "event")
        await patch_bot(kmock, "alpha", {"spec": {"replicas": 2}, "metadata": {"generation": 2}})
        await eventually(lambda: condition(ivrbot(kmock, "alpha"), "PortsAllocated")["status"] == "True",
                         "allocated after scale-down")


async def test_dispatcher_change_triggers_opensips_ds_reload(kmock: Any, start_operator: Any) -> None:
    """A loopback JSON-RPC endpoint stands in for OpenSIPS's mi_http; the operator must call ds_reload."""
    calls: list[dict[str, Any]] = []

    async def mi(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.json_response({"jsonrpc": "2.0", "result": "OK", "id": calls[-1].get("id")})

    app = web.Application()
    app.router.add_post("/mi", mi)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with start_operator(opensips_mi_urls=(f"http://127.0.0.1:{port}/mi",)):
            await create_bot(kmock, bot("alpha", replicas=1))
            await eventually(lambda: "alpha-0" in pods(kmock), "pod")
            await kubelet_all_ready(kmock)
            await eventually(lambda: ready_status(kmock, "alpha"), "ready")
            await eventually(lambda: calls, "ds_reload called")
            assert calls[0]["method"] == "ds_reload" and calls[0]["jsonrpc"] == "2.0"
    finally:
        await runner.cleanup()


async def test_liveness_endpoint_answers_with_free_ports(kmock: Any, start_operator: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with start_operator(liveness_endpoint=f"http://127.0.0.1:{port}/healthz"):
        await create_bot(kmock, bot("alpha", replicas=1))
        await eventually(lambda: "alpha-0" in pods(kmock), "pod")

        async def probe() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
                data: dict[str, Any] = await resp.json()
                return data

        health = await probe()
        # kopf caches probe results briefly; the allocator's count is there either way.
        assert health["ports_free"] in (200, 200 - 22)
