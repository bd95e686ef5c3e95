"""The pure desired-state function, the rollout planner, spec rules and the dispatcher table."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot_operator import crd as crd_module
from ivrbot_operator import defaults as d
from ivrbot_operator.cpu import cpu_cores, llama_threads
from ivrbot_operator.desired import Owner, allocation_fits, desired_pod, spec_hash
from ivrbot_operator.dispatcher import (
    Destination,
    DispatcherSync,
    MIError,
    destination_uris,
    parse_ds_list,
    parse_table,
    render_table,
)
from ivrbot_operator.ports import PodPorts, PortPool
from ivrbot_operator.rollout import PodState, plan
from ivrbot_operator.spec import BotSpec, parse_spec

POOL = PortPool(20000, 20999)
OWNER = Owner(name="alpha", namespace="voice", uid="uid-1")
PORTS = PodPorts(base=20000, rtp_ports=16)


MODELS = {"hostPath": {"path": "/var/lib/ivrbot/models"}}


def spec(**raw: Any) -> BotSpec:
    parsed, problems = parse_spec({"modelsVolume": MODELS, **raw}, POOL)
    assert parsed is not None, problems
    return parsed


def env(pod: dict[str, Any]) -> dict[str, Any]:
    bot = next(c for c in pod["spec"]["containers"] if c["name"] == "bot")
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in bot["env"]}


def test_pod_shape_hostnetwork_ports_probes_drain() -> None:
    pod = desired_pod(OWNER, spec(drainGraceSeconds=45, otlpEndpoint="http://jaeger:4317"), 0, PORTS)
    ps = pod["spec"]
    assert ps["hostNetwork"] is True and ps["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert ps["terminationGracePeriodSeconds"] == 45 + d.TERMINATION_MARGIN_SECONDS
    e = env(pod)
    assert e["IVRBOT_SIP_PORT"] == "20000" and e["IVRBOT_HTTP_PORT"] == "20001"
    assert (e["IVRBOT_RTP_PORT_MIN"], e["IVRBOT_RTP_PORT_MAX"]) == ("20006", "20021")
    assert e["IVRBOT_VOSK_URL"] == "ws://127.0.0.1:20002" and e["IVRBOT_PIPER_URL"] == "ws://127.0.0.1:20003"
    assert e["IVRBOT_LLAMA_URL"] == "http://127.0.0.1:20004/v1"
    assert e["IVRBOT_ADVERTISED_ADDRESS"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert e["IVRBOT_DRAIN_GRACE_SECONDS"] == "45"
    assert e["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317" and e["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert "k8s.pod.name=$(POD_NAME)" in e["OTEL_RESOURCE_ATTRIBUTES"]
    assert "k8s.node.name=$(NODE_NAME)" in e["OTEL_RESOURCE_ATTRIBUTES"]
    bot = ps["containers"][0]
    assert bot["lifecycle"]["preStop"]["httpGet"] == {"host": "127.0.0.1", "port": 20001, "path": "/drain"}
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    sidecars = {c["name"]: c for c in ps["initContainers"]}
    assert set(sidecars) == {"vosk", "piper", "llama"}
    assert all(c["restartPolicy"] == "Always" and "readinessProbe" in c for c in sidecars.values())
    assert sidecars["llama"]["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "--port" in sidecars["llama"]["args"] and "20004" in sidecars["llama"]["args"]
    assert {"name": "VOSK_SERVER_PORT", "value": "20002"} in sidecars["vosk"]["env"]
    assert sidecars["vosk"]["image"] == d.VOSK_IMAGE and sidecars["llama"]["image"] == d.LLAMA_IMAGE
    assert sidecars["piper"]["image"] == d.PIPER_IMAGE and bot["image"] == d.BOT_IMAGE
    assert pod["metadata"]["ownerReferences"][0] == OWNER.reference()


def llama_args(**llm: Any) -> list[str]:
    pod = desired_pod(OWNER, spec(llm=llm), 0, PORTS)
    args: list[str] = next(c for c in pod["spec"]["initContainers"] if c["name"] == "llama")["args"]
    return args


def test_llama_threads_follow_the_containers_cpu_not_the_nodes() -> None:
    """llama.cpp would start a thread per node CPU; one held back stalls every token (cpu.py)."""
    args = llama_args()  # the CRD's default request, 500m
    assert args[args.index("--threads") + 1] == "1"
    args = llama_args(resources={"requests": {"cpu": "1500m"}, "limits": {"cpu": "3"}})
    assert args[args.index("--threads") + 1] == "3"  # what it may use
    args = llama_args(resources={"requests": {"cpu": 2}})
    assert args[args.index("--threads") + 1] == "2"
    # the user's own thread count wins, and is the only one
    for own in (["--threads", "4"], ["-t", "4"], ["--threads=4"]):
        args = llama_args(args=own)
        assert args.count("--threads") == (1 if own[0] == "--threads" else 0) and args[-len(own):] == own


@given(st.one_of(
    st.integers(1, 64_000).map(lambda m: f"{m}m"),
    st.decimals(min_value="0.001", max_value="64", places=3).map(str),
    st.integers(1, 64),
))
def test_llama_threads_are_whole_cores_within_the_cpu_given(cpu: object) -> None:
    threads = llama_threads({"limits": {"cpu": cpu}}, [])
    cores = cpu_cores(cpu)
    assert threads is not None and cores is not None
    assert 1 <= threads <= max(1, cores)


def test_cpu_quantities_that_are_not_quantities_set_no_threads() -> None:
    for bad in ("", "one", "1.5x", "-1", None, True, [1]):
        assert llama_threads({"limits": {"cpu": bad}}, []) is None


def test_pod_validates_against_kubernetes_schema() -> None:
    pod = desired_pod(OWNER, spec(sip={"port": 20500}, tolerations=[{"key": "voice", "operator": "Exists"}],
                                  nodeSelector={"voice": "yes"}, resources={"limits": {"cpu": "1"}}), 3,
                      PodPorts(base=20100, rtp_ports=8, fixed_sip=20500))
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    anti = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert env(pod)["IVRBOT_SIP_PORT"] == "20500"


def test_desired_state_is_pure_and_hash_tracks_changes() -> None:
    a = desired_pod(OWNER, spec(), 0, PORTS)
    assert a == desired_pod(OWNER, spec(), 0, PORTS)
    b = desired_pod(OWNER, spec(assistant={"greeting": "Hi"}), 0, PORTS)
    h = d.ANNOTATION_SPEC_HASH
    assert a["metadata"]["annotations"][h] != b["metadata"]["annotations"][h]
    assert a["metadata"]["annotations"][h] == spec_hash(a)
    assert allocation_fits(spec(), PORTS) and not allocation_fits(spec(rtp={"portsPerPod": 20}), PORTS)


def state(ordinal: int, h: str = "new", ready: bool = True, terminating: bool = False,
          failed: bool = False) -> PodState:
    return PodState(name=f"alpha-{ordinal}", ordinal=ordinal, spec_hash=h, ready=ready and not failed,
                    terminating=terminating, failed=failed)


def manifests(n: int) -> dict[int, dict[str, Any]]:
    return {o: {"metadata": {"name": f"alpha-{o}", "annotations": {d.ANNOTATION_SPEC_HASH: "new"}}}
            for o in range(n)}


def test_plan_create_scale_down_and_steady_state() -> None:
    assert [m["metadata"]["name"] for m in plan(3, manifests(3), {0: state(0)}).create] == ["alpha-1", "alpha-2"]
    assert plan(1, manifests(1), {0: state(0), 1: state(1), 2: state(2, terminating=True)}).delete == ["alpha-1"]
    assert plan(2, manifests(2), {0: state(0), 1: state(1)}).empty


def test_plan_rolls_one_ready_pod_at_a_time() -> None:
    old = {0: state(0, "old"), 1: state(1, "old"), 2: state(2, "old")}
    assert plan(3, manifests(3), old).delete == ["alpha-2"]
    # alpha-2 replaced but not ready yet: nothing else moves.
    assert plan(3, manifests(3), {**old, 2: state(2, "new", ready=False)}).empty
    assert plan(3, manifests(3), {0: old[0], 1: old[1]}).delete == []  # alpha-2 missing: create first
    assert plan(3, manifests(3), {**old, 2: state(2, "new")}).delete == ["alpha-1"]
    assert plan(3, manifests(3), {**old, 2: state(2, "old", terminating=True)}).delete == []
    # An outdated pod that serves nothing is replaced at once.
    assert plan(2, manifests(2), {0: state(0, "old", ready=False), 1: state(1, "old")}).delete == ["alpha-0"]
    # No manifest for an ordinal (its replacement's ports are not reserved): its pod stays.
    assert plan(1, {}, {0: state(0, "old")}).empty


def test_plan_replaces_failed_pods_and_they_do_not_block_the_rollout() -> None:
    # An evicted pod (phase Failed) is deleted at once, then recreated once gone.
    assert plan(2, manifests(2), {0: state(0, failed=True), 1: state(1)}).delete == ["alpha-0"]
    assert [m["metadata"]["name"] for m in plan(2, manifests(2), {1: state(1)}).create] == ["alpha-0"]
    # Even when it is outdated and not in desired.
    assert plan(2, {1: manifests(2)[1]}, {0: state(0, "old", failed=True), 1: state(1)}).delete == ["alpha-0"]


pod_states = st.builds(
    lambda o, h, ready, term, failed: PodState(name=f"alpha-{o}", ordinal=o, spec_hash=h, ready=ready and not term
                                               and not failed, terminating=term, failed=failed),
    st.integers(0, 5), st.sampled_from(["old", "new"]), st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(replicas=st.integers(0, 5), pods=st.lists(pod_states, max_size=6),
       with_ports=st.sets(st.integers(0, 5)))
def test_plan_never_drops_a_serving_pod_without_a_placed_replacement(
        replicas: int, pods: list[PodState], with_ports: set[int]) -> None:
    observed = {p.ordinal: p for p in pods}
    desired = {o: m for o, m in manifests(6).items() if o in with_ports}
    todo = plan(replicas, desired, observed)
    serving = {p.name: p for p in observed.values() if p.ready and p.ordinal < replicas}
    dropped = [serving[name] for name in todo.delete if name in serving]
    # A serving in-range pod goes only to be replaced by a placed (desired) pod, one at a time.
    assert all(p.ordinal in desired for p in dropped)
    assert len(dropped) <= 1
    assert not [p for p in observed.values() if p.terminating and p.name in todo.delete]
    # Every Failed pod that is not already going is deleted.
    assert {p.name for p in observed.values() if p.failed and not p.terminating} <= set(todo.delete)


@pytest.mark.parametrize(("raw", "field"), [
    ({"rtp": {"portsPerPod": 7}}, "spec.rtp.portsPerPod"),
    ({"rtp": {"portsPerPod": 4}, "sip": {"maxCalls": 3}}, "spec.rtp.portsPerPod"),
    ({"rtp": {"portsPerPod": 2000}}, "spec.rtp.portsPerPod"),  # bigger than the whole pool
    ({"sip": {"port": 70000}}, "spec.sip.port"),
    ({"sip": {"port": 5060}}, "spec.sip.port"),  # outside the pool
    ({"sip": {"trustedProxies": ["10.0.0.0/33"]}}, "spec.sip.trustedProxies[0]"),
    ({"replicas": -1}, "spec.replicas"),
    ({"replicas": "two"}, "spec.replicas"),
    ({"assistant": {"dtmfMap": {"1": {"action": "transfer", "target": "bob"}}}}, "spec.assistant.dtmfMap[1].target"),
    ({"assistant": {"dtmfMap": {"X": {"action": "hangup"}}}}, "spec.assistant.dtmfMap[X]"),
    ({"assistant": {"vad": {"confidence": 2}}}, "spec.assistant.vad.confidence"),
    ({"otlpEndpoint": "jaeger:4317"}, "spec.otlpEndpoint"),
])
def test_invalid_specs_name_the_field(raw: dict[str, Any], field: str) -> None:
    parsed, problems = parse_spec(raw, POOL)
    assert parsed is None
    assert field in [p.field for p in problems], problems


def test_defaults_come_from_the_crd_schema() -> None:
    s = spec()
    assert (s.replicas, s.max_calls, s.rtp_ports, s.drain_grace_seconds) == (1, 4, 16, 60)
    assert s.llm_parallel == 4 and s.image == d.BOT_IMAGE and s.tts_voice == d.PIPER_VOICE


def test_dispatcher_table_is_db_text_with_escaped_uris() -> None:
    dests = [Destination("10.0.0.2", 20022, "alpha-1"), Destination("10.0.0.1", 20000, "alpha-0")]
    text = render_table(7, 2, 1, dests)
    lines = text.splitlines()
    assert lines[0].startswith("id(int,auto) setid(int) destination(string)")
    assert lines[1] == "1:7:sip\\:10.0.0.1\\:20000::0:1:2:1::alpha-0"
    rows = parse_table(text)
    assert [r[2] for r in rows] == ["sip:10.0.0.1:20000", "sip:10.0.0.2:20022"]
    assert render_table(7, 2, 1, list(reversed(dests))) == text
    assert parse_table(render_table(1, 1, 0, [])) == []


def test_default_ivrbot_without_a_model_source_is_refused_naming_the_field() -> None:
    parsed, problems = parse_spec({}, POOL)
    assert parsed is None
    problem = next(p for p in problems if p.field == "spec.llm.model")
    assert "spec.llm.modelUrl" in problem.message and "spec.modelsVolume" in problem.message
    assert parse_spec({"llm": {"modelUrl": "https://example.org/m.gguf"}}, POOL)[0] is not None
    assert parse_spec({"modelsVolume": MODELS}, POOL)[0] is not None
    assert parse_spec({"llm": {"model": "/opt/baked/model.gguf"}}, POOL)[0] is not None  # in the image


def test_stt_model_is_refused_not_silently_ignored() -> None:
    parsed, problems = parse_spec({"modelsVolume": MODELS, "stt": {"model": "/models/vosk-en"}}, POOL)
    assert parsed is None and [p.field for p in problems] == ["spec.stt.model"]
    stt = crd_module.spec_schema()["properties"]["spec"]["properties"]["stt"]["properties"]
    assert "model" not in stt


def test_crd_is_not_in_the_all_category() -> None:
    """`kubectl delete all` must not delete bot pools."""
    assert "all" not in crd_module.crd()["spec"]["names"].get("categories", [])


def test_pod_records_its_whole_port_block() -> None:
    ports = PodPorts(base=20100, rtp_ports=8, fixed_sip=20500)
    pod = desired_pod(OWNER, spec(sip={"port": 20500}), 0, ports)
    pod["status"] = {"phase": "Failed", "reason": "Evicted"}
    state_ = PodState.from_pod(pod)
    assert state_ is not None and state_.ports == ports and state_.failed and not state_.ready


# ds_list as OpenSIPS 3.x/4.x mi_http answers it (modules/dispatcher: ds_mi_list + ds_print_mi_list).
DS_LIST = {"PARTITIONS": [{"name": "default", "SETS": [
    {"id": 1, "Destinations": [
        {"URI": "sip:10.0.0.1:20000", "state": "Active", "first_hit_counter": 3},
        {"URI": "sip:10.0.0.2:20022", "state": "Probing", "first_hit_counter": 0, "attr": ""}]},
    {"id": 7, "Destinations": [{"URI": "sip:10.0.0.9:5060", "state": "Inactive", "first_hit_counter": 0}]}]}]}


def test_ds_list_is_parsed_tolerantly() -> None:
    assert parse_ds_list(DS_LIST) == {1: frozenset({"sip:10.0.0.1:20000", "sip:10.0.0.2:20022"}),
                                      7: frozenset({"sip:10.0.0.9:5060"})}
    assert parse_ds_list({"PARTITIONS": [{"name": "default"}]}) == {}  # nothing loaded: no SETS at all
    assert parse_ds_list({"sets": [{"ID": "1", "destinations": [{"uri": "SIP:10.0.0.1:20000"}]}]}) == {
        1: frozenset({"sip:10.0.0.1:20000"})}
    with pytest.raises(MIError):
        parse_ds_list("<html>not found</html>")


def test_dispatcher_sync_backs_off_without_end_and_warns_only_on_changes() -> None:
    sync = DispatcherSync(["http://a/mi", "http://b/mi"], set_id=1, grace=90, backoff=5, backoff_max=60)
    want = destination_uris([Destination("10.0.0.1", 20000, "alpha-0")])
    assert sync.want(1, want, now=0.0)
    assert not sync.want(1, want, now=1.0)  # the same table: nothing to do
    assert sync.due(0.0) == [("http://a/mi", True), ("http://b/mi", True)]
    now, warnings, tries, rechecks = 0.0, 0, 0, []
    while now < 3600:  # an hour of "b" refusing
        for url, reload in sync.due(now):
            if url == "http://a/mi":
                rechecks.append(reload)
                assert sync.check(url, {1: want, 7: frozenset()}, now) == (True, False)
            else:
                tries += 1
                warnings += sync.failed(url, "ReloadFailed", "OpenSIPS at http://b/mi: refused", now)
        now += 1.0
    assert tries > 55  # never gave up: a try at least every backoff_max seconds
    assert warnings <= 5  # the first failure and the 10, 20, 40 s steps; then quiet at 60 s
    assert rechecks[0] and not any(rechecks[1:])  # a synced OpenSIPS is read back, not reloaded again
    status, reason, message = sync.condition()
    assert (status, reason) == (False, "ReloadFailed") and "http://b/mi" in message
    sync.check("http://b/mi", {1: want}, now)
    assert sync.condition()[:2] == (True, "Verified")


def test_dispatcher_sync_reports_a_stale_table_only_after_the_grace() -> None:
    sync = DispatcherSync(["http://a/mi"], set_id=1, grace=90, backoff=5, backoff_max=60)
    sync.want(1, frozenset({"sip:10.0.0.3:20044"}), now=0.0)
    assert sync.check("http://a/mi", parse_ds_list(DS_LIST), 0.0) == (False, False)
    assert sync.condition()[1] == "Pending"
    matches, warn = sync.check("http://a/mi", parse_ds_list(DS_LIST), 95.0)
    assert (matches, warn) == (False, True)
    status, reason, message = sync.condition()
    assert (status, reason) == (False, "StaleTable")
    assert "sip:10.0.0.3:20044" in message and "sip:10.0.0.1:20000" in message
