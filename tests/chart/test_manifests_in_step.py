"""manifests/ and the chart's CRD stay in step with their one source; samples fit the CRD;
kind-config.yaml maps exactly what the sample's first pod holds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ivrbot_operator import crd as crd_module
from ivrbot_operator import defaults as d
from ivrbot_operator.ports import PortAllocator, PortPool
from ivrbot_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SAMPLES = [MANIFESTS / "sample-ivrbot.yaml", *sorted((MANIFESTS / "examples").glob("*.yaml"))]


def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "deploy" / "render_manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_manifests_match_the_chart_render() -> None:
    rendered = _render_module().render()
    assert set(rendered) == {"crd.yaml", "operator.yaml", "jaeger.yaml"}
    for name, text in rendered.items():
        assert (MANIFESTS / name).read_text() == text, f"manifests/{name} is stale: run deploy/render_manifests.py"


def test_crd_copies_are_identical_to_the_package_data() -> None:
    source = crd_module.crd_text()
    assert (ROOT / "charts" / "ivrbot-operator" / "crds" / "ivrbots.ivrbot.dev.yaml").read_text() == source
    assert yaml.safe_load((MANIFESTS / "crd.yaml").read_text()) == yaml.safe_load(source)


@pytest.mark.parametrize("path", sorted(MANIFESTS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_plain_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in docs(path):
        if doc["apiVersion"].startswith(d.GROUP):
            continue  # custom resources: checked against the CRD below
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_fit_the_crd_schema_and_the_operator_rules(path: Path) -> None:
    schema = crd_module.spec_schema()
    bots = [doc for doc in docs(path) if doc["kind"] == d.KIND]
    assert bots
    for bot in bots:
        jsonschema.validate(bot, schema)
        parsed, problems = parse_spec(bot["spec"], PortPool(d.PORT_POOL_MIN, d.PORT_POOL_MAX))
        assert parsed is not None, problems


def test_crd_schema_refuses_what_it_can_express() -> None:
    schema = crd_module.spec_schema()
    bot = docs(MANIFESTS / "sample-ivrbot.yaml")[1]
    for bad in ({"replicas": -1}, {"rtp": {"portsPerPod": 1}}, {"sip": {"port": 70000}},
                {"assistant": {"dtmfMap": {"1": {"action": "dance"}}}}, {"logLevel": "LOUD"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**bot, "spec": {**bot["spec"], **bad}}, schema)


def test_kind_config_maps_the_sample_pods_ports_inside_the_default_pool() -> None:
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mappings = kind["nodes"][0]["extraPortMappings"]
    assert all(m["containerPort"] == m["hostPort"] for m in mappings)
    udp = {m["containerPort"] for m in mappings if m["protocol"] == "UDP"}
    tcp = {m["containerPort"] for m in mappings if m["protocol"] == "TCP"}

    values = yaml.safe_load((ROOT / "charts" / "ivrbot-operator" / "values.yaml").read_text())
    pool = PortPool(values["portPool"]["min"], values["portPool"]["max"])
    sample = next(doc for doc in docs(MANIFESTS / "sample-ivrbot.yaml") if doc["kind"] == d.KIND)
    spec, problems = parse_spec(sample["spec"], pool)
    assert spec is not None, problems
    alloc = PortAllocator(pool)
    assert alloc.allocate(("voice", "sample"), [0], spec.rtp_ports) is None
    first = alloc.of(("voice", "sample"))[0]
    assert first.sip in udp and first.sip in tcp and first.http in tcp
    assert set(range(first.rtp_min, first.rtp_max + 1)) <= udp
    assert 5060 in udp  # OpenSIPS example
    bot_ports = (udp | tcp) - {5060}
    assert all(pool.contains(p) for p in bot_ports)
