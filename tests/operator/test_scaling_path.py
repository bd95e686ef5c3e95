"""The scaling path under failure, against kmock: operator restarts mid-way, taken SIP ports,
evicted pods, tight pools, refused creates, OpenSIPS that does not load the table, two operators."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from opsim import (
    IVRBOTS,
    NS,
    OpenSipsMI,
    _call,
    bot,
    condition,
    create_bot,
    delete_bot,
    eventually,
    ivrbot,
    kubelet_all_ready,
    kubelet_evict,
    kubelet_ready,
    live,
    patch_bot,
    pod_ports,
    pods,
)
from test_lifecycle import events, pod_requests, ready_status

from ivrbot_operator import defaults as d
from ivrbot_operator.ports import PortPool


def assert_no_shared_ports(k: Any) -> None:
    """Pods of different IVRBots never share a host port; pods of one IVRBot share at most its fixed SIP port."""
    made = pods(k)
    for (a, pa), (b, pb) in itertools.combinations(sorted(made.items()), 2):
        shared = pod_ports(pa) & pod_ports(pb)
        same_bot = pa["metadata"]["labels"][d.LABEL_BOT] == pb["metadata"]["labels"][d.LABEL_BOT]
        if same_bot and pa["spec"].get("affinity", {}).get("podAntiAffinity"):
            sip = {int(pa["metadata"]["annotations"][d.ANNOTATION_SIP_PORT])}
            shared -= sip
        assert not shared, f"{a} and {b} share ports {sorted(shared)[:5]}"


async def rounds(n: int = 10) -> None:
    """Let the operator run several reconcile rounds (its interval is 0.2 s in these tests)."""
    for _ in range(n):
        await asyncio.sleep(0.1)


async def test_crash_before_status_is_written_then_restart_shares_no_ports(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        # "gone" takes the pool's first block and is deleted: a hole that an allocator which
        # forgot alpha would hand out again.
        await create_bot(kmock, bot("gone", replicas=1))
        await eventually(lambda: "gone-0" in pods(kmock), "gone pod")
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: {"alpha-0", "alpha-1"} <= set(pods(kmock)), "alpha pods")
        await kubelet_all_ready(kmock)
        await eventually(lambda: ready_status(kmock, "alpha"), "alpha ready")
        await delete_bot(kmock, "gone")
        await eventually(lambda: "gone" not in live(kmock, "ivrbot.dev/v1alpha1/ivrbots"), "gone deleted")
    # The crash came after the pods were created and before status was written.
    await patch_bot(kmock, "alpha", {"status": {"allocations": []}})
    assert ivrbot(kmock, "alpha")["status"]["allocations"] == []
    before = {n: p["metadata"]["annotations"] for n, p in pods(kmock).items()}
    deletes = pod_requests(kmock, "DELETE")
    async with start_operator():
        await create_bot(kmock, bot("beta", replicas=2))
        await eventually(lambda: {"beta-0", "beta-1"} <= set(pods(kmock)), "beta pods")
        await rounds()
        assert_no_shared_ports(kmock)
        # alpha's pods were neither moved nor replaced, and its status has its blocks again.
        assert {n: pods(kmock)[n]["metadata"]["annotations"] for n in before} == before
        assert pod_requests(kmock, "DELETE") == deletes
        allocs = await eventually(lambda: ivrbot(kmock, "alpha")["status"]["allocations"], "alpha status")
        assert [a["pod"] for a in allocs] == ["alpha-0", "alpha-1"]


async def test_taken_sip_port_keeps_the_pods_and_names_the_true_holder(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("beta", replicas=1))
        await eventually(lambda: "beta-0" in pods(kmock), "beta pod")
        await create_bot(kmock, bot("alpha", replicas=3))
        await eventually(lambda: {"alpha-0", "alpha-1", "alpha-2"} <= set(pods(kmock)), "alpha pods")
        await kubelet_all_ready(kmock)
        await eventually(lambda: ready_status(kmock, "alpha"), "alpha ready")
        beta_sip = int(pods(kmock)["beta-0"]["metadata"]["annotations"][d.ANNOTATION_SIP_PORT])
        # A typo pointing into beta's block.
        await patch_bot(kmock, "alpha", {"spec": {"sip": {"port": beta_sip + 5}}, "metadata": {"generation": 2}})
        cond = await eventually(lambda: condition(ivrbot(kmock, "alpha"), "PortsAllocated")["status"] == "False"
                                and condition(ivrbot(kmock, "alpha"), "PortsAllocated"), "refused port")
        assert cond["reason"] == "SipPortTaken" and "beta" in cond["message"]
        assert "spec.sip.port" in cond["message"]
        await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "SipPortTaken"], "event")
        await rounds()
        assert {"alpha-0", "alpha-1", "alpha-2"} <= set(pods(kmock))
        assert pod_requests(kmock, "DELETE") == 0
        # A port inside alpha's own block: the message says so and blames nobody else.
        own = int(pods(kmock)["alpha-1"]["metadata"]["annotations"][d.ANNOTATION_SIP_PORT]) + 7
        await patch_bot(kmock, "alpha", {"spec": {"sip": {"port": own}}, "metadata": {"generation": 3}})
        cond = await eventually(lambda: "own pod" in condition(ivrbot(kmock, "alpha"), "PortsAllocated")["message"]
                                and condition(ivrbot(kmock, "alpha"), "PortsAllocated"), "own block")
        assert "beta" not in cond["message"] and "alpha-1" in cond["message"]
        await rounds()
        assert {"alpha-0", "alpha-1", "alpha-2"} <= set(pods(kmock)) and pod_requests(kmock, "DELETE") == 0
        # Back to no fixed port: allocated again, nothing moved.
        await patch_bot(kmock, "alpha", {"spec": {"sip": {"port": None}}, "metadata": {"generation": 4}})
        await eventually(lambda: ready_status(kmock, "alpha", 4), "alpha ready at generation 4")
        assert pod_requests(kmock, "DELETE") == 0


async def test_evicted_pod_is_replaced_and_the_ivrbot_gets_ready(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: len(pods(kmock)) == 2, "two pods")
        await kubelet_all_ready(kmock)
        await eventually(lambda: ready_status(kmock, "alpha"), "ready")
        ports_before = pod_ports(pods(kmock)["alpha-0"])
        await kubelet_evict(kmock, "alpha-0")
        await eventually(lambda: "alpha-0" in pods(kmock)
                         and pods(kmock)["alpha-0"].get("status", {}).get("phase") != "Failed", "alpha-0 recreated")
        assert pod_ports(pods(kmock)["alpha-0"]) == ports_before  # same block, same ordinal
        await kubelet_ready(kmock, "alpha-0")
        status = await eventually(lambda: ready_status(kmock, "alpha"), "ready again")
        assert status["readyReplicas"] == 2


async def test_rollout_keeps_serving_pods_whose_replacement_cannot_be_placed(
        kmock: Any, start_operator: Any) -> None:
    async with start_operator(pool=PortPool(21000, 21049)):  # 50 ports: two blocks of 22, 6 spare
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: len(pods(kmock)) == 2, "two pods")
        await kubelet_all_ready(kmock)
        await eventually(lambda: ready_status(kmock, "alpha"), "ready")
        await patch_bot(kmock, "alpha", {"spec": {"rtp": {"portsPerPod": 18}}, "metadata": {"generation": 2}})
        cond = await eventually(lambda: condition(ivrbot(kmock, "alpha"), "PortsAllocated")["status"] == "False"
                                and condition(ivrbot(kmock, "alpha"), "PortsAllocated"), "no room")
        assert cond["reason"] == "PoolExhausted"
        await rounds()
        assert set(pods(kmock)) == {"alpha-0", "alpha-1"}
        assert pod_requests(kmock, "DELETE") == 0
        # Back to a size that fits: nothing to roll, ready again.
        await patch_bot(kmock, "alpha", {"spec": {"rtp": {"portsPerPod": 16}}, "metadata": {"generation": 3}})
        await eventually(lambda: ready_status(kmock, "alpha", 3), "ready at generation 3")
        assert pod_requests(kmock, "DELETE") == 0


async def test_rollout_to_bigger_blocks_goes_one_pod_at_a_time(kmock: Any, start_operator: Any) -> None:
    async with start_operator(pool=PortPool(21000, 21199)):
        await create_bot(kmock, bot("alpha", replicas=2))
        await eventually(lambda: len(pods(kmock)) == 2, "two pods")
        await kubelet_all_ready(kmock)
        await eventually(lambda: ready_status(kmock, "alpha"), "ready")
        await patch_bot(kmock, "alpha", {"spec": {"rtp": {"portsPerPod": 20}}, "metadata": {"generation": 2}})

        def rtp_size(name: str) -> int:
            return len(pod_ports(pods(kmock)[name])) - 5

        await eventually(lambda: rtp_size("alpha-1") == 20, "alpha-1 replaced with a bigger block")
        assert rtp_size("alpha-0") == 16  # still serving with its old block
        await kubelet_ready(kmock, "alpha-1")
        await eventually(lambda: rtp_size("alpha-0") == 20, "alpha-0 replaced")
        await kubelet_ready(kmock, "alpha-0")
        await eventually(lambda: ready_status(kmock, "alpha", 2), "ready at generation 2")
        assert_no_shared_ports(kmock)


async def test_default_ivrbot_without_a_model_is_refused(kmock: Any, start_operator: Any) -> None:
    async with start_operator():
        await create_bot(kmock, bot("plain", replicas=1, modelsVolume=None))
        cond = await eventually(lambda: condition(ivrbot(kmock, "plain"), "SpecValid"), "SpecValid")
        assert cond["status"] == "False" and "spec.llm.model" in cond["message"]
        assert "spec.llm.modelUrl" in cond["message"]
        await rounds(5)
        assert not pods(kmock)


async def test_opensips_that_keeps_an_old_table_is_reported_and_retried(kmock: Any, start_operator: Any) -> None:
    """An OpenSIPS pair: one reloads the table, the other answers OK but keeps its cache."""
    good, stale = OpenSipsMI(kmock, "alpha-dispatcher"), OpenSipsMI(kmock, "alpha-dispatcher")
    stale.mode = "stale"
    urls = (await good.start(), await stale.start())
    try:
        async with start_operator(opensips_mi_urls=urls, reload_grace=0.5, reload_backoff=0.05,
                                  reload_backoff_max=0.4):
            await create_bot(kmock, bot("alpha", replicas=1))
            await eventually(lambda: "alpha-0" in pods(kmock), "pod")
            await kubelet_all_ready(kmock)
            await eventually(lambda: ready_status(kmock, "alpha"), "ready")
            cond = await eventually(lambda: condition(ivrbot(kmock, "alpha"), "DispatcherSynced")["reason"]
                                    == "StaleTable" and condition(ivrbot(kmock, "alpha"), "DispatcherSynced"),
                                    "stale table reported")
            assert cond["status"] == "False" and stale.url in cond["message"] and good.url not in cond["message"]
            event = await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "StaleTable"], "event")
            assert stale.url in event[0]["message"]
            host = pods(kmock)["alpha-0"]["status"]["hostIP"]
            assert [u.split(":")[1] for u in good.loaded[1]] == [host]
            assert stale.loaded == {}
            # The stale one is retried without end; once it loads the table, the condition clears.
            stale.mode = "ok"
            await eventually(lambda: condition(ivrbot(kmock, "alpha"), "DispatcherSynced")["status"] == "True",
                             "synced")
            assert stale.loaded == good.loaded
            # Scale up: both are reloaded and verified again.
            await patch_bot(kmock, "alpha", {"spec": {"replicas": 2}, "metadata": {"generation": 2}})
            await eventually(lambda: "alpha-1" in pods(kmock), "second pod")
            await kubelet_all_ready(kmock)
            await eventually(lambda: len(good.loaded.get(1, [])) == 2 and len(stale.loaded.get(1, [])) == 2,
                             "both OpenSIPS list two bots")
            await eventually(lambda: condition(ivrbot(kmock, "alpha"), "DispatcherSynced")["status"] == "True",
                             "synced after scale-up")
    finally:
        await good.stop()
        await stale.stop()


async def test_html_from_a_wrong_mi_path_is_reported_not_fatal(kmock: Any, start_operator: Any) -> None:
    mi = OpenSipsMI(kmock, "alpha-dispatcher")
    mi.mode = "html"
    url = await mi.start()
    try:
        async with start_operator(opensips_mi_urls=(url,), reload_backoff=0.05, reload_backoff_max=0.3):
            await create_bot(kmock, bot("alpha", replicas=1))
            await eventually(lambda: "alpha-0" in pods(kmock), "pod")
            await kubelet_all_ready(kmock)
            await eventually(lambda: ready_status(kmock, "alpha"), "status written despite the MI answer")
            cond = await eventually(lambda: condition(ivrbot(kmock, "alpha"), "DispatcherSynced"), "condition")
            assert cond["status"] == "False" and cond["reason"] == "ReloadFailed"
            assert "not a JSON-RPC answer" in cond["message"]
            await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "ReloadFailed"], "event")
            assert "alpha-dispatcher" in live(kmock, "v1/configmaps")
            # OpenSIPS fixed (or back from an outage): the operator never gave up.
            mi.mode = "ok"
            await eventually(lambda: condition(ivrbot(kmock, "alpha"), "DispatcherSynced")["status"] == "True",
                             "synced")
    finally:
        await mi.stop()


def lease_holder(k: Any) -> Any:
    lease = live(k, "coordination.k8s.io/v1/leases").get("ivrbot-operator", {})
    return lease.get("spec", {}).get("holderIdentity")


async def test_second_operator_stands_by_while_the_first_holds_the_lease(kmock: Any, start_operator: Any) -> None:
    lease = {"lease_namespace": NS, "lease_duration": 2.0}
    # Both operators share this test's event loop, and kopf cancels at its stop every task started
    # while it ran; so the standby starts first, with op-a's Lease already there (as after op-a's
    # earlier start), and op-a starts right after and renews it.
    await _call(kmock, "post", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ivrbot-operator"},
        "spec": {"holderIdentity": "op-a", "leaseDurationSeconds": 2, "renewTime": "2026-01-01T00:00:00.000000Z"}})
    async with start_operator(identity="op-b", wait_ready=False, **lease) as second:
        async with start_operator(identity="op-a", **lease) as first:
            await create_bot(kmock, bot("alpha", replicas=2))
            await eventually(lambda: {"alpha-0", "alpha-1"} <= set(pods(kmock)), "alpha pods")
            await rounds()
            assert lease_holder(kmock) == "op-a"
            assert not second.ready.is_set()  # op-b runs no handlers, so it allocates nothing
            assert pod_requests(kmock, "POST") == 2
            runtime = await first.stop()  # a clean stop hands the Lease over
            assert runtime is not None
        await asyncio.wait_for(second.ready.wait(), timeout=30)
        await eventually(lambda: lease_holder(kmock) == "op-b", "op-b leads")
        await create_bot(kmock, bot("beta", replicas=2))
        await eventually(lambda: {"beta-0", "beta-1"} <= set(pods(kmock)), "beta pods from op-b")
        await rounds()
        assert_no_shared_ports(kmock)
        assert pod_requests(kmock, "DELETE") == 0  # op-b rebuilt alpha's blocks, moved nothing


def ready_in_history(k: Any, name: str, reason: str) -> dict[str, Any] | None:
    """The first Ready condition with `reason` in any stored version of the IVRBot `name`."""
    for (res, _ns, obj_name), obj in list(k.objects.items()):
        if obj_name != name or getattr(res, "plural", None) != IVRBOTS.rsplit("/", 1)[-1]:
            continue
        for version in obj.history:
            cond = condition(dict(version), "Ready") if version is not None else {}
            if cond.get("reason") == reason:
                return cond
    return None


async def test_refused_pod_create_is_reported_and_the_rest_goes_on(kmock: Any, start_operator: Any) -> None:
    """An admission webhook or OwnerReferencesPermissionEnforcement refusing every bot pod."""
    kmock[f"post /api/v1/namespaces/{NS}/pods"] << 403 << {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "pods \"alpha-0\" is forbidden: cannot set blockOwnerDeletion"}
    async with start_operator():
        await create_bot(kmock, bot("alpha", replicas=2))
        # kmock stores a pod even when its create was answered 403, so a later reconcile may move Ready on to
        # PodsNotReady: look for the condition in every version of the IVRBot, not only the latest.
        cond = await eventually(lambda: ready_in_history(kmock, "alpha", "PodCreateFailed"), "PodCreateFailed")
        assert cond["status"] == "False" and "HTTP 403" in cond["message"] and "blockOwnerDeletion" in cond["message"]
        # Both pods were tried, the status and the dispatcher ConfigMap written all the same.
        assert "alpha-0" in cond["message"] and "alpha-1" in cond["message"]
        assert len(ivrbot(kmock, "alpha")["status"]["allocations"]) == 2
        assert "alpha-dispatcher" in live(kmock, "v1/configmaps")
        event = await eventually(lambda: [e for e in events(kmock) if e.get("reason") == "PodCreateFailed"], "event")
        assert event[0]["type"] == "Warning"
