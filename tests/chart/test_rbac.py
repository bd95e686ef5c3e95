"""The chart's RBAC grants exactly what the operator calls: no more, no less.

What the operator calls is read from its code, so a new API call without its grant (or a grant
left behind after the call went) fails here instead of on a cluster:
- kube.py: every `CoreV1Api` method it calls (`create_namespaced_pod` -> pods create, ...);
- kopf, driven by handlers.py: the watched resource (list, watch, patch for its finalizer and
  annotations, status patch), each `kopf.index`ed resource (list, watch), events (create);
- desired.py: owner references with blockOwnerDeletion need update on the owner's finalizers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart

from ivrbot_operator import defaults as d
from ivrbot_operator.desired import Owner

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "operator" / "ivrbot_operator"
CHART = ROOT / "charts" / "ivrbot-operator"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with Chart.load(CHART) as chart:
        out = chart.render(values, name="ivrbot-operator", namespace="ivrbot-system")
    return [doc for name, text in out.items() if name.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

VERBS = {"create": "create", "delete": "delete", "patch": "patch", "read": "get", "list": "list",
         "replace": "update"}
CORE_RESOURCES = {"pod": "pods", "config_map": "configmaps", "event": "events", "service": "services",
                  "secret": "secrets", "endpoints": "endpoints"}


def _kube_calls() -> set[Rule]:
    source = (OPERATOR / "kube.py").read_text()
    apis = set(re.findall(r"kubernetes\.client\.(\w+Api)\(", source))
    assert apis == {"CoreV1Api"}, f"kube.py uses {apis}: teach this test their API groups"
    calls = set(re.findall(r"self\._core\.(\w+?)_namespaced_(\w+?)\b", source))
    assert calls, "no API call found in kube.py"
    out: set[Rule] = set()
    for verb, resource in calls:
        assert verb in VERBS and resource in CORE_RESOURCES, f"unmapped call {verb}_namespaced_{resource}"
        out.add(("", CORE_RESOURCES[resource], VERBS[verb]))
    return out


def _kopf_calls() -> set[Rule]:
    source = (OPERATOR / "handlers.py").read_text()
    out: set[Rule] = {
        (d.GROUP, d.PLURAL, "list"), (d.GROUP, d.PLURAL, "watch"),
        (d.GROUP, d.PLURAL, "patch"),  # finalizer, progress and diff-base annotations
        (d.GROUP, f"{d.PLURAL}/status", "patch"),
        ("", "events", "create"),  # kopf posts core v1 events
    }
    for resource in re.findall(r'kopf\.index\("(\w+)"', source):
        out |= {("", resource, "list"), ("", resource, "watch")}
    assert ("", "pods", "watch") in out, "the pod index moved: update this test"
    return out


def _lease_calls() -> set[Rule]:
    """leader.py's Lease calls: granted by their own Role in the operator's namespace."""
    source = (OPERATOR / "leader.py").read_text()
    calls = set(re.findall(r"self\._api\.(\w+?)_namespaced_lease\b", source))
    assert calls, "no Lease call found in leader.py"
    assert calls <= set(VERBS), f"unmapped Lease calls {calls}"
    return {("coordination.k8s.io", "leases", VERBS[verb]) for verb in calls}


def _owner_calls() -> set[Rule]:
    ref = Owner("x", "ns", "uid").reference()
    return {(d.GROUP, f"{d.PLURAL}/finalizers", "update")} if ref.get("blockOwnerDeletion") else set()


USED = _kube_calls() | _kopf_calls() | _owner_calls()
LEASE = _lease_calls()


def leader_election(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    return role


def granted(doc: dict[str, Any]) -> set[Rule]:
    return {(group, res, verb) for rule in doc["rules"] for group in rule["apiGroups"]
            for res in rule["resources"] for verb in rule["verbs"]}


def test_the_code_needs_finalizers_update_for_block_owner_deletion() -> None:
    assert (d.GROUP, f"{d.PLURAL}/finalizers", "update") in USED
    assert ("", "pods", "create") in USED and ("", "configmaps", "patch") in USED


def test_default_install_is_namespaced_to_the_bot_namespace_with_exactly_the_used_rules() -> None:
    docs = render({})
    lease = leader_election(docs)
    assert lease["metadata"]["namespace"] == "ivrbot-system" and granted(lease) == LEASE
    roles = [r for r in by_kind(docs, "Role") if r is not lease]
    assert [r["metadata"]["namespace"] for r in roles] == ["voice"]
    assert granted(roles[0]) == USED
    bindings = {b["roleRef"]["name"] for b in by_kind(docs, "RoleBinding")}
    assert bindings == {roles[0]["metadata"]["name"], lease["metadata"]["name"]}
    # Nothing cluster-wide but read-only discovery (kopf watches CRDs and namespaces).
    for role in by_kind(docs, "ClusterRole"):
        assert granted(role) == {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                                 ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
                                 ("", "namespaces", "list"), ("", "namespaces", "watch")}


@pytest.mark.parametrize("values", [{"watchNamespaces": []}, {"watchNamespaces": ["voice", "lab"]}],
                         ids=["cluster-wide", "two-namespaces"])
def test_every_scope_grants_exactly_the_used_rules(values: dict[str, Any]) -> None:
    docs = render(values)
    assert granted(leader_election(docs)) == LEASE
    main = [r for r in [*by_kind(docs, "Role"), *by_kind(docs, "ClusterRole")]
            if not r["metadata"]["name"].endswith(("-discovery", "-leader-election"))]
    assert main
    for role in main:
        assert granted(role) == USED, role["metadata"]
