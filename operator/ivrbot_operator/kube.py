"""The few API writes the operator makes (pods, ConfigMaps), over the official client.

The client is synchronous, so every call runs in a worker thread; conflicts and
not-found answers that only mean "already done" are not errors.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import kubernetes


def load_client() -> kubernetes.client.ApiClient:
    """In-cluster service account, else the local kubeconfig."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


class KubeApi:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(client)

    async def create_pod(self, manifest: dict[str, Any]) -> bool:
        """False when a pod of that name already exists."""
        ns = manifest["metadata"]["namespace"]
        try:
            await asyncio.to_thread(self._core.create_namespaced_pod, ns, cast(Any, manifest), _preload_content=False)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str) -> bool:
        """False when it was already gone."""
        try:
            await asyncio.to_thread(self._core.delete_namespaced_pod, name, namespace, _preload_content=False)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = await asyncio.to_thread(
                self._core.read_namespaced_config_map, name, namespace, _preload_content=False)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(cast(Any, resp).data)
        return body

    async def apply_configmap(self, manifest: dict[str, Any]) -> bool:
        """Create or update its data; False when it already held exactly that data."""
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        current = await self.read_configmap(ns, name)
        if current is None:
            try:
                await asyncio.to_thread(
                    self._core.create_namespaced_config_map, ns, cast(Any, manifest), _preload_content=False)
                return True
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
        elif current.get("data") == manifest["data"]:
            return False
        await asyncio.to_thread(
            self._core.patch_namespaced_config_map, name, ns, {"data": manifest["data"]}, _preload_content=False)
        return True


def api_error(exc: kubernetes.client.ApiException) -> str:
    """The API server's own words for a refused call (its Status message), with the HTTP code."""
    message = exc.reason or ""
    try:
        body = json.loads(exc.body) if exc.body else {}
        if isinstance(body, dict) and body.get("message"):
            message = str(body["message"])
    except (TypeError, ValueError):
        if exc.body:
            message = str(exc.body)[:200]
    return f"HTTP {exc.status} {message}".strip()
