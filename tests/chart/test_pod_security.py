"""Bot pods as the operator renders them: valid Kubernetes, locked down, sized, and probed patiently.

The pods come from the operator's pure desired-state function (what it would create), for the
default IVRBot and for specs that change what the pod mounts, and are validated against the
official Kubernetes schemas before each security field is checked container by container.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from ivrbot_operator.crd import spec_schema
from ivrbot_operator.desired import RUN_AS_USER, Owner, desired_pod
from ivrbot_operator.ports import PodPorts, PortPool
from ivrbot_operator.spec import parse_spec

K8S = "1.30.0"
POOL = PortPool(20000, 20999)
OWNER = Owner(name="alpha", namespace="voice", uid="uid-1")
PORTS = PodPorts(base=20000, rtp_ports=16)

SPECS: dict[str, dict[str, Any]] = {
    "pvc-models": {"modelsVolume": {"persistentVolumeClaim": {"claimName": "ivrbot-models"}}},
    "model-download": {"llm": {"modelUrl": "https://models.example/model.gguf"}},
    "hostpath-models": {"modelsVolume": {"hostPath": {"path": "/var/lib/ivrbot/models", "type": "Directory"}},
                        "resources": {"limits": {"memory": "1Gi"}}},
}


def pod(raw: dict[str, Any]) -> dict[str, Any]:
    spec, problems = parse_spec(raw, POOL)
    assert spec is not None, problems
    manifest = desired_pod(OWNER, spec, 0, PORTS)
    kubernetes_validate.validate(manifest, K8S, strict=True)
    return manifest


def containers(p: dict[str, Any]) -> list[dict[str, Any]]:
    return [*p["spec"]["initContainers"], *p["spec"]["containers"]]


@pytest.mark.parametrize("name", SPECS)
def test_pod_runs_non_root_without_token_and_with_runtime_default_seccomp(name: str) -> None:
    ps = pod(SPECS[name])["spec"]
    assert ps["automountServiceAccountToken"] is False
    sc = ps["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == sc["runAsGroup"] == sc["fsGroup"] == RUN_AS_USER != 0
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("name", SPECS)
def test_every_container_drops_all_capabilities_and_writes_only_its_scratch(name: str) -> None:
    p = pod(SPECS[name])
    volumes = {v["name"]: v for v in p["spec"]["volumes"]}
    cs = containers(p)
    assert {c["name"] for c in cs} == {"vosk", "piper", "llama", "bot"}
    for c in cs:
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert "runAsUser" not in sc or sc["runAsUser"] != 0
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        # /tmp is the container's own emptyDir, and HOME/caches point there.
        tmp = mounts["/tmp"]
        assert "emptyDir" in volumes[tmp["name"]] and not tmp.get("readOnly"), c["name"]
        assert sum(1 for x in cs for m in x.get("volumeMounts", []) if m["name"] == tmp["name"]) == 1
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env["HOME"] == "/tmp" and env["XDG_CACHE_HOME"].startswith("/tmp/"), c["name"]
        writable = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
        allowed = ["/tmp", "/models"] if (c["name"] == "llama" and name == "model-download") else ["/tmp"]
        assert sorted(writable) == sorted(allowed), (c["name"], writable)


def test_the_bot_binds_control_endpoints_to_loopback_and_metrics_to_the_pod_address() -> None:
    p = pod(SPECS["pvc-models"])
    bot = p["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in bot["env"]}
    assert env["IVRBOT_HTTP_HOST"] == "127.0.0.1"
    assert env["IVRBOT_METRICS_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # Under hostNetwork the kubelet reaches the pod's loopback: probes and preStop say so.
    for handler in (bot["startupProbe"], bot["readinessProbe"], bot["livenessProbe"], bot["lifecycle"]["preStop"]):
        assert handler["httpGet"]["host"] == "127.0.0.1"


def test_probes_have_a_startup_probe_and_patient_timeouts() -> None:
    for c in containers(pod(SPECS["pvc-models"])):
        assert "startupProbe" in c, c["name"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            assert probe["timeoutSeconds"] >= 3, (c["name"], kind)
            # A readiness flip needs several failures in a row, so one slow answer does not
            # take the bot out of the dispatcher table.
            assert probe["failureThreshold"] * probe["periodSeconds"] >= 10, (c["name"], kind)


def test_every_container_requests_cpu_and_memory_by_default() -> None:
    for c in containers(pod(SPECS["pvc-models"])):
        requests = c["resources"]["requests"]
        assert set(requests) >= {"cpu", "memory"}, c["name"]


def test_resource_defaults_come_from_the_crd_schema() -> None:
    props = spec_schema()["properties"]["spec"]["properties"]
    for path in (("resources",), ("stt", "resources"), ("tts", "resources"), ("llm", "resources")):
        node = props
        for key in path[:-1]:
            node = node[key]["properties"]
        schema = node[path[-1]]
        assert set(schema["properties"]["requests"]["default"]) == {"cpu", "memory"}, path
    # A spec that sets its own resources keeps them.
    bot = pod(SPECS["hostpath-models"])["spec"]["containers"][0]
    assert bot["resources"]["limits"] == {"memory": "1Gi"}
    assert set(bot["resources"]["requests"]) == {"cpu", "memory"}
