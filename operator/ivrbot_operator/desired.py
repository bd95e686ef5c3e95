"""Desired state: a pure function from (IVRBot, spec, allocations) to pod manifests.

No API calls and no clock here, so the whole pod shape is unit-tested without a
server. Handlers only compare this with what exists and apply the difference.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ivrbot_operator import defaults as d
from ivrbot_operator.cpu import llama_threads
from ivrbot_operator.ports import PodPorts, fits
from ivrbot_operator.spec import BotSpec


@dataclass(frozen=True)
class Owner:
    """The IVRBot the children belong to (owner references need its uid)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": d.API_VERSION, "kind": d.KIND, "name": self.name, "uid": self.uid,
            "controller": True, "blockOwnerDeletion": True,
        }


def pod_name(bot: str, ordinal: int) -> str:
    return f"{bot}-{ordinal}"


def selector_labels(bot: str) -> dict[str, str]:
    return {d.LABEL_BOT: bot, d.LABEL_MANAGED_BY: d.MANAGED_BY}


def selector_string(bot: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(bot).items()))


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


#: The one non-root UID/GID every container of a bot pod runs as (the bot and Piper images create it).
RUN_AS_USER = 10001
#: Probe timeouts well above the 1 s default: /readyz asks three sidecars, and a node busy with speech
#: models must not flap readiness (and with it the dispatcher table) on a slow answer.
PROBE_TIMEOUT_SECONDS = 5
TCP_PROBE_TIMEOUT_SECONDS = 3


def _tcp_probe(port: int, period: int = 5, failures: int = 3) -> dict[str, Any]:
    # host 127.0.0.1: the kubelet runs in the host network namespace, which the pod shares.
    return {"tcpSocket": {"host": "127.0.0.1", "port": port}, "periodSeconds": period,
            "timeoutSeconds": TCP_PROBE_TIMEOUT_SECONDS, "failureThreshold": failures}


def _http_probe(port: int, path: str, period: int = 5, failures: int = 3) -> dict[str, Any]:
    return {"httpGet": {"host": "127.0.0.1", "port": port, "path": path}, "periodSeconds": period,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS, "failureThreshold": failures}


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Nothing a speech server needs: no capabilities (ports are above 1024), no setuid, no writes
    outside its own emptyDir scratch at /tmp."""
    return {
        "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _scratch(container: str) -> dict[str, Any]:
    return {"name": f"tmp-{container}", "mountPath": "/tmp"}


def _scratch_env() -> list[dict[str, Any]]:
    """HOME and caches point into the container's /tmp scratch (its root filesystem is read-only)."""
    return [{"name": "HOME", "value": "/tmp"}, {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"}]


def _bot_env(owner: Owner, spec: BotSpec, ports: PodPorts) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("NODE_NAME", "spec.nodeName"),
        _field_env("POD_UID", "metadata.uid"),
        _field_env("IVRBOT_ADVERTISED_ADDRESS", "status.hostIP"),
        {"name": "IVRBOT_SIP_HOST", "value": "0.0.0.0"},
        # Control endpoints (/drain, /readyz) on loopback only; /metrics also on the node address.
        {"name": "IVRBOT_HTTP_HOST", "value": "127.0.0.1"},
        _field_env("IVRBOT_METRICS_HOST", "status.podIP"),
        {"name": "IVRBOT_SIP_PORT", "value": str(ports.sip)},
        {"name": "IVRBOT_HTTP_PORT", "value": str(ports.http)},
        {"name": "IVRBOT_RTP_PORT_MIN", "value": str(ports.rtp_min)},
        {"name": "IVRBOT_RTP_PORT_MAX", "value": str(ports.rtp_max)},
        {"name": "IVRBOT_MAX_CALLS", "value": str(spec.max_calls)},
        {"name": "IVRBOT_TRUSTED_PROXIES", "value": ",".join(spec.trusted_proxies)},
        {"name": "IVRBOT_DRAIN_GRACE_SECONDS", "value": str(spec.drain_grace_seconds)},
        {"name": "IVRBOT_VOSK_URL", "value": f"ws://127.0.0.1:{ports.vosk}"},
        {"name": "IVRBOT_PIPER_URL", "value": f"ws://127.0.0.1:{ports.piper}"},
        {"name": "IVRBOT_LLAMA_URL", "value": f"http://127.0.0.1:{ports.llama}/v1"},
        {"name": "IVRBOT_SYSTEM_PROMPT", "value": spec.system_prompt},
        {"name": "IVRBOT_GREETING", "value": spec.greeting},
        {"name": "IVRBOT_VAD_CONFIDENCE", "value": str(spec.vad["confidence"])},
        {"name": "IVRBOT_VAD_START_SECS", "value": str(spec.vad["startSecs"])},
        {"name": "IVRBOT_VAD_STOP_SECS", "value": str(spec.vad["stopSecs"])},
        {"name": "IVRBOT_VAD_MIN_VOLUME", "value": str(spec.vad["minVolume"])},
        {"name": "IVRBOT_VAD_PAUSE_SECS", "value": str(spec.vad["pauseSecs"])},
        {"name": "IVRBOT_MAX_TOKENS", "value": str(spec.max_tokens)},
        {"name": "IVRBOT_HANGUP_PHRASES", "value": ",".join(spec.hangup_phrases)},
        {"name": "IVRBOT_SILENCE_TIMEOUT_SECS", "value": str(spec.silence_timeout_secs)},
        {"name": "IVRBOT_LLM_PREFILL", "value": "1" if spec.llm_prefill else "0"},
        {"name": "IVRBOT_PREEMPTIVE_REPLIES", "value": "1" if spec.preemptive_replies else "0"},
        {"name": "IVRBOT_TTS_FIRST_CHUNK_SECS", "value": str(spec.tts_first_chunk_secs)},
        {"name": "IVRBOT_DTMF_MAP", "value": json.dumps(spec.dtmf_map, sort_keys=True)},
        {"name": "IVRBOT_LOG_LEVEL", "value": spec.log_level},
        {"name": "IVRBOT_LOG_JSON", "value": "1"},
        *_scratch_env(),
        {"name": "OTEL_SERVICE_NAME", "value": "ivrbot"},
        # $(VAR) expands the downward-API values declared above.
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": (
            "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),k8s.node.name=$(NODE_NAME),"
            f"k8s.pod.uid=$(POD_UID),service.instance.id=$(POD_NAME),ivrbot.name={owner.name}")},
    ]
    if spec.otlp_endpoint:
        env += [
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": spec.otlp_endpoint},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL",
             "value": "http/protobuf" if spec.otlp_endpoint.rstrip("/").endswith(":4318") else "grpc"},
        ]
    return env


def _mounts(container: str, *, models_writable: bool = False) -> list[dict[str, Any]]:
    models: dict[str, Any] = {"name": "models", "mountPath": d.MODELS_MOUNT}
    if not models_writable:
        models["readOnly"] = True
    return [models, _scratch(container)]


def _sidecars(spec: BotSpec, ports: PodPorts) -> list[dict[str, Any]]:
    """Native sidecars (restartable init containers): started before the bot, stopped after it,
    so a draining bot keeps its speech services until its last call ends."""
    # One warm recognizer per call: a new one costs ~1.2 s of CPU on its first audio (docs/protocols.md).
    vosk_env = [{"name": "VOSK_SERVER_INTERFACE", "value": "127.0.0.1"},
                {"name": "VOSK_SERVER_PORT", "value": str(ports.vosk)},
                {"name": "VOSK_WARM_RECOGNIZERS", "value": str(spec.max_calls)}, *_scratch_env()]
    llama_args = ["--host", "127.0.0.1", "--port", str(ports.llama), "-m", spec.llm_model,
                  "--ctx-size", str(spec.llm_ctx_size), "--parallel", str(spec.llm_parallel)]
    if spec.llm_model_url:
        llama_args += ["--model-url", spec.llm_model_url]
    threads = llama_threads(spec.llm.resources, list(spec.llm.args))
    if threads is not None:
        llama_args += ["--threads", str(threads)]
    containers: list[dict[str, Any]] = [
        {
            "name": "vosk", "image": spec.stt.image, "imagePullPolicy": spec.image_pull_policy,
            "restartPolicy": "Always", "env": vosk_env, "args": list(spec.stt.args),
            "startupProbe": _tcp_probe(ports.vosk, period=2, failures=150),
            "readinessProbe": _tcp_probe(ports.vosk),
            "resources": copy.deepcopy(spec.stt.resources), "volumeMounts": _mounts("vosk"),
        },
        {
            "name": "piper", "image": spec.tts.image, "imagePullPolicy": spec.image_pull_policy,
            "restartPolicy": "Always",
            "args": ["piper-server", "--host", "127.0.0.1", "--port", str(ports.piper), "--voice",
                     spec.tts_voice, *spec.tts.args],
            "env": [{"name": "PIPER_VOICE", "value": spec.tts_voice}, *_scratch_env()],
            "startupProbe": _tcp_probe(ports.piper, period=2, failures=150),
            "readinessProbe": _tcp_probe(ports.piper),
            "resources": copy.deepcopy(spec.tts.resources), "volumeMounts": _mounts("piper"),
        },
        {
            "name": "llama", "image": spec.llm.image, "imagePullPolicy": spec.image_pull_policy,
            "restartPolicy": "Always", "args": llama_args + list(spec.llm.args),
            "env": [*_scratch_env(), {"name": "LLAMA_CACHE", "value": "/tmp/llama.cpp"}],
            # /health answers 503 while the model loads: the pod is not ready until it is loaded.
            "startupProbe": _http_probe(ports.llama, "/health", period=2, failures=900),
            "readinessProbe": _http_probe(ports.llama, "/health"),
            # --model-url downloads to the -m path on the models volume: writable only then.
            "resources": copy.deepcopy(spec.llm.resources),
            "volumeMounts": _mounts("llama", models_writable=bool(spec.llm_model_url)),
        },
    ]
    for c in containers:
        c["securityContext"] = container_security_context()
        if not c["args"]:
            del c["args"]
        if not c["resources"]:
            del c["resources"]
    return containers


def _affinity(owner: Owner, spec: BotSpec) -> dict[str, Any]:
    affinity = copy.deepcopy(spec.affinity)
    if spec.sip_port is not None:
        # One fixed SIP port for all pods: two of them on one node would collide.
        anti = affinity.setdefault("podAntiAffinity", {})
        anti.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append({
            "labelSelector": {"matchLabels": selector_labels(owner.name)},
            "topologyKey": "kubernetes.io/hostname",
        })
    return affinity


def spec_hash(manifest: dict[str, Any]) -> str:
    """A stable digest of everything that would need a new pod to change."""
    material = {"labels": manifest["metadata"].get("labels"), "spec": manifest["spec"]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def desired_pod(owner: Owner, spec: BotSpec, ordinal: int, ports: PodPorts) -> dict[str, Any]:
    name = pod_name(owner.name, ordinal)
    labels = {
        **selector_labels(owner.name),
        "app.kubernetes.io/name": "ivrbot",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "bot",
        d.LABEL_ORDINAL: str(ordinal),
    }
    bot: dict[str, Any] = {
        "name": "bot",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["serve"],
        "env": _bot_env(owner, spec, ports),
        "ports": [
            {"name": "sip-udp", "containerPort": ports.sip, "hostPort": ports.sip, "protocol": "UDP"},
            {"name": "sip-tcp", "containerPort": ports.sip, "hostPort": ports.sip, "protocol": "TCP"},
            {"name": "http", "containerPort": ports.http, "hostPort": ports.http, "protocol": "TCP"},
        ],
        # Liveness and readiness wait for the process to answer at all (imports take seconds on a busy node).
        "startupProbe": _http_probe(ports.http, "/healthz", period=2, failures=60),
        "readinessProbe": _http_probe(ports.http, "/readyz", period=5),
        "livenessProbe": _http_probe(ports.http, "/healthz", period=10, failures=6),
        # Stop taking calls, finish the live ones (returns when done or after the grace period).
        "lifecycle": {"preStop": {"httpGet": {"host": "127.0.0.1", "port": ports.http, "path": "/drain"}}},
        "securityContext": container_security_context(),
        "volumeMounts": [_scratch("bot")],
    }
    if spec.resources:
        bot["resources"] = copy.deepcopy(spec.resources)
    models_volume: dict[str, Any] = (
        {"name": "models", **copy.deepcopy(spec.models_volume)} if spec.models_volume
        else {"name": "models", "emptyDir": {}})
    pod_spec: dict[str, Any] = {
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        # The bot never calls the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": spec.drain_grace_seconds + d.TERMINATION_MARGIN_SECONDS,
        "initContainers": _sidecars(spec, ports),
        "containers": [bot],
        "volumes": [models_volume, *({"name": f"tmp-{c}", "emptyDir": {"sizeLimit": "256Mi"}}
                                     for c in ("bot", "vosk", "piper", "llama"))],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(list(spec.tolerations))
    affinity = _affinity(owner, spec)
    if affinity:
        pod_spec["affinity"] = affinity
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {
                d.ANNOTATION_SIP_PORT: str(ports.sip),
                # The pod's whole block, so a restarted operator knows it even if status was never written.
                d.ANNOTATION_PORTS: json.dumps(ports.to_status(), sort_keys=True),
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(ports.http),
            },
            "ownerReferences": [owner.reference()],
        },
        "spec": pod_spec,
    }
    manifest["metadata"]["annotations"][d.ANNOTATION_SPEC_HASH] = spec_hash(manifest)
    return manifest


def allocation_fits(spec: BotSpec, ports: PodPorts) -> bool:
    """An allocation made for an older spec (other RTP size or fixed SIP port) must be replaced."""
    return fits(ports, spec.rtp_ports, spec.sip_port)
