"""The pure desired-state function, the rollout planner, spec rules and the dispatcher table."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from ivrbot_operator import defaults as d
from ivrbot_operator.desired import Owner, allocation_fits, desired_pod, spec_hash
from ivrbot_operator.dispatcher import Destination, ReloadSchedule, parse_table, render_table
from ivrbot_operator.ports import PodPorts, PortPool
from ivrbot_operator.rollout import PodState, plan
from ivrbot_operator.spec import BotSpec, parse_spec

POOL = PortPool(20000, 20999)
OWNER = Owner(name="alpha", namespace="voice", uid="uid-1")
PORTS = PodPorts(base=20000, rtp_ports=16)


def spec(**raw: Any) -> BotSpec:
    parsed, problems = parse_spec(raw, POOL)
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


def state(ordinal: int, h: str = "new", ready: bool = True, terminating: bool = False) -> PodState:
    return PodState(name=f"alpha-{ordinal}", ordinal=ordinal, spec_hash=h, ready=ready, terminating=terminating)


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
    # Stale ports (e.g. RTP block size changed) count as outdated.
    assert plan(1, {}, {0: state(0)}, stale=frozenset({0})).delete == ["alpha-0"]


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


def test_reload_schedule_retries_until_the_configmap_has_propagated() -> None:
    sched = ReloadSchedule(window=90, retry=15)
    assert not sched.due(0)
    sched.changed(100)
    assert sched.due(100)
    sched.reloaded(100)
    assert not sched.due(110) and sched.due(115)
    sched.reloaded(115)
    assert not sched.due(191)
