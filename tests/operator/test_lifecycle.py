"""Create, scale, spec change, delete: the operator against the kmock emulator."""

from __future__ import annotations

from typing import Any

from ivrbot_operator import defaults as d
from ivrbot_operator.dispatcher import parse_table

from opsim import (
    IVRBOTS,
    bot,
    condition,
    create_bot,
    eventually,
    ivrbot,
    kubelet_all_ready,
    live,
    pods,
)


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
        status = await eventually(
            lambda: ivrbot(kmock, "alpha")["status"] if condition(ivrbot(kmock, "alpha"), "Ready")["status"] == "True"
            else None, "Ready=True")
        assert status["readyReplicas"] == 2
        assert status["observedGeneration"] == 1
        allocs = status["allocations"]
        assert [a["pod"] for a in allocs] == ["alpha-0", "alpha-1"]
        assert allocs[0]["hostIP"] == "172.18.0.2"
        spans = [set(range(a["sipPort"], a["rtpPortMax"] + 1)) for a in allocs]
        assert not spans[0] & spans[1]
        cm = await eventually(lambda: live(kmock, "v1/configmaps").get("alpha-dispatcher"), "dispatcher configmap")
        rows = parse_table(cm["data"]["dispatcher"])
        assert sorted(r[2] for r in rows) == sorted(f"sip:172.18.0.2:{a['sipPort']}" for a in allocs)
        assert IVRBOTS and d.GROUP
