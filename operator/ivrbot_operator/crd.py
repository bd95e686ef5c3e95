"""The packaged IVRBot CRD, and the schema defaults the API server would apply.

The emulator used in tests (and any API server that skipped defaulting, e.g. an
object stored before a default was added) hands the operator a spec without
defaults, so the operator applies the same ones from the same schema.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any, cast

import yaml

CRD_FILE = "ivrbots.ivrbot.dev.yaml"


def crd_text() -> str:
    return resources.files("ivrbot_operator").joinpath("crds", CRD_FILE).read_text(encoding="utf-8")


@functools.cache
def _crd() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(crd_text()))


def crd() -> dict[str, Any]:
    return copy.deepcopy(_crd())


def spec_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version."""
    version = _crd()["spec"]["versions"][0]
    return cast(dict[str, Any], copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural-schema defaulting, as the API server does it: absent keys with a default."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    result = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
        if key in result:
            result[key] = apply_defaults(sub, result[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        known = set(schema.get("properties", {}))
        for key in result:
            if key not in known:
                result[key] = apply_defaults(extra, result[key])
    return result
