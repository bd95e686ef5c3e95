"""The Helm chart rendered by the real Helm library (helm_python), linted, and every object
validated against the official Kubernetes 1.30 schemas (kubernetes-validate)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, lint

from ivrbot_operator import defaults as d
from ivrbot_operator.config import OperatorConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ivrbot-operator"
K8S = "1.30.0"

NON_DEFAULT: dict[str, Any] = {
    "watchNamespaces": ["voice", "lab"],
    "portPool": {"min": 40000, "max": 40999},
    "reconcileInterval": 5,
    "images": {"bot": "registry.local/bot:1", "piper": "registry.local/piper:1",
               "vosk": "registry.local/vosk:1", "llama": "registry.local/llama:1"},
    "opensips": {"miUrl": "http://opensips.voice:8888/mi"},
    "jaeger": {"enabled": True},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "voice", "operator": "Exists", "effect": "NoSchedule"}],
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with Chart.load(CHART) as chart:
        out = chart.render(values, name="ivrbot-operator", namespace="ivrbot-system")
    docs: list[dict[str, Any]] = []
    for name, text in out.items():
        if name.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    deploy = next(doc for doc in by_kind(docs, "Deployment") if doc["metadata"]["name"] == "ivrbot-operator")
    return {e["name"]: e["value"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_every_rendered_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    docs = render(values)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S, strict=True)


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = lint(CHART, values, strict=True, kube_version=f"v{K8S}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_crd_is_shipped_in_crds_dir_valid_and_kept() -> None:
    with Chart.load(CHART) as chart:
        crds = chart.crds
    assert [c["filename"] for c in crds] == ["ivrbot-operator/crds/ivrbots.ivrbot.dev.yaml"]
    crd = yaml.safe_load(crds[0]["data"])
    kubernetes_validate.validate(crd, K8S, strict=True)
    # Helm never deletes crds/ on uninstall; the annotation also keeps a templated copy.
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Ready", "Replicas", "Ports", "Age"]
    assert crd["spec"]["names"]["shortNames"] == [d.SHORT_NAME]


def test_defaults_reach_the_operator_config() -> None:
    config = OperatorConfig.from_env(operator_env(render({})))
    assert (config.pool.min, config.pool.max) == (d.PORT_POOL_MIN, d.PORT_POOL_MAX)
    # The bot namespace only, by default: no cluster-wide pod or ConfigMap rights.
    assert config.namespaces == ("voice",) and config.opensips_mi_urls == ()
    assert config.lease_namespace  # leader election on: the release's namespace
    assert config.images.bot == d.BOT_IMAGE and config.images.llama == d.LLAMA_IMAGE


def test_values_mirror_operator_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["images"] == {"bot": d.BOT_IMAGE, "piper": d.PIPER_IMAGE, "vosk": d.VOSK_IMAGE,
                                "llama": d.LLAMA_IMAGE}
    assert values["portPool"] == {"min": d.PORT_POOL_MIN, "max": d.PORT_POOL_MAX}
    assert f"{values['image']['repository']}:{values['image']['tag']}" == d.OPERATOR_IMAGE


def test_non_default_values_reach_the_operator_config() -> None:
    config = OperatorConfig.from_env(operator_env(render(NON_DEFAULT)))
    assert config.namespaces == ("voice", "lab")
    assert (config.pool.min, config.pool.max) == (40000, 40999)
    assert config.opensips_mi_urls == ("http://opensips.voice:8888/mi",)
    assert config.images.vosk == "registry.local/vosk:1" and config.reconcile_interval == 5


def test_operator_runs_alone_with_recreate_and_liveness() -> None:
    deploy = next(doc for doc in by_kind(render({}), "Deployment"))
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def rules(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(res, verb) for rule in doc["rules"] for res in rule["resources"] for verb in rule["verbs"]}


def test_rbac_is_least_privilege() -> None:
    cluster = render({"watchNamespaces": []})
    main_role = next(r for r in by_kind(cluster, "ClusterRole") if r["metadata"]["name"] == "ivrbot-operator")
    granted = rules(main_role)
    assert ("pods", "create") in granted and ("ivrbots/status", "patch") in granted
    # update only where owner-reference enforcement asks for it (tests/chart/test_rbac.py: exact set)
    assert {res for res, verb in granted if verb == "update"} == {"ivrbots/finalizers"}
    assert not any(verb in ("*", "deletecollection") for _, verb in granted)
    assert not any(res in ("secrets", "*", "nodes") for res, _ in granted)
    assert ("configmaps", "delete") not in granted

    scoped = render({"watchNamespaces": ["voice", "lab"]})
    election = [r for r in by_kind(scoped, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    roles = [r for r in by_kind(scoped, "Role") if r not in election]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["lab", "voice"]
    bindings = [b for b in by_kind(scoped, "RoleBinding") if not b["metadata"]["name"].endswith("-leader-election")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["lab", "voice"]
    # Leader election: Leases in the operator's own namespace, nothing else.
    assert [rules(r) for r in election] == [{("leases", "get"), ("leases", "create"), ("leases", "patch")}]
    # Cluster-wide, only read-only discovery remains.
    for role in by_kind(scoped, "ClusterRole"):
        assert {verb for _, verb in rules(role)} <= {"list", "watch"}
        assert ("pods", "list") not in rules(role)


#: An exact release: a digest, a dotted version (1.37.0, 3.12.12-slim-bookworm), a numbered build
#: (server-b11434) or a Debian point release (debian:12.12-slim).
EXACT = re.compile(r"@sha256:[0-9a-f]{64}$|:(v?\d+\.\d+\.\d+[\w.-]*|[\w.-]*-b\d+)$|^debian:\d+\.\d+(-slim)?$")


def _image_refs() -> dict[str, str]:
    refs: dict[str, str] = {}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    refs.update({f"values images.{k}": v for k, v in values["images"].items()})
    refs["values image"] = f"{values['image']['repository']}:{values['image']['tag']}"
    refs["values jaeger.image"] = values["jaeger"]["image"]
    refs.update({f"defaults {k}": getattr(d, k) for k in dir(d) if k.endswith("_IMAGE")})
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "image" and isinstance(v, str):
                    refs[f"{where} {len(refs)}"] = v
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        walk(list(yaml.safe_load_all(path.read_text())), path.name)
    for path in sorted((ROOT / "docker").glob("*.Dockerfile")):
        for i, m in enumerate(re.findall(r"^FROM\s+(\S+)", path.read_text(), re.M)):
            refs[f"{path.name} FROM {i}"] = m
    return refs


def test_every_image_is_an_exact_release() -> None:
    refs = _image_refs()
    assert len(refs) > 15
    moving = {where: ref for where, ref in refs.items() if not EXACT.search(ref)}
    assert moving == {}


#: image -> (the pyproject extra it installs, the import roots it copies)
IMAGES = {
    "bot": ("bot", {"bot"}),
    "piper": ("sidecars", {"bot", "sidecars"}),  # bot/ for the `ivrbot` command only (cli.py: stdlib)
    "vosk": ("sidecars", {"bot", "sidecars"}),
    "operator": ("operator", {"operator"}),
}


def test_images_are_multi_stage_and_each_installs_only_its_own_extra() -> None:
    for name, (extra, roots) in IMAGES.items():
        text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
        assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "COPY --from=build" in text, name
        assert re.findall(r'pip install "\.\[(\w+)\]"', text) == [extra], name
        copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
        assert copied == roots, name
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and {"!bot/", "!sidecars/", "!operator/"} <= set(ignore)


def test_jaeger_is_optional_and_exposes_otlp_and_ui() -> None:
    assert not [doc for doc in render({}) if doc["metadata"]["name"].endswith("-jaeger")]
    service = next(s for s in by_kind(render({"jaeger": {"enabled": True}}), "Service"))
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 16686}


@pytest.mark.parametrize("bad", [
    {"portPool": {"min": 80, "max": 90}},
    {"watchNamespaces": ["Not_A_Namespace"]},
    {"images": {"bot": ""}},
    {"unknownKey": 1},
    {"opensips": {"miUrl": "opensips:8888"}},
])
def test_values_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    with Chart.load(CHART) as chart, pytest.raises(Exception, match=r"(?i)schema|valid|values"):
        chart.render(bad, name="x", namespace="y")


def test_inverted_pool_is_refused_at_render() -> None:
    with Chart.load(CHART) as chart, pytest.raises(Exception, match=r"portPool\.min"):
        chart.render({"portPool": {"min": 21000, "max": 20000}}, name="x", namespace="y")
