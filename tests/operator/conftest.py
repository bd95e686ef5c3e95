"""The whole operator, in-process, against the kmock Kubernetes emulator.

What kmock 0.8 does not do, and what these tests therefore do themselves:
- no uid/generation: every IVRBot is created with metadata.uid and metadata.generation,
  and a spec change bumps generation, as the API server would;
- no garbage collection of owned children: the operator's own delete handler
  deletes the pods, and the tests check the children carry owner references;
- no pod lifecycle: the tests play the kubelet (mark pods Ready, set nodeName/hostIP);
- no schema defaulting: the operator applies the CRD defaults itself;
- listing namespaces fails: scanning is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
import kubernetes
import pytest
from opsim import IVRBOTS, NS

from ivrbot_operator import defaults as d
from ivrbot_operator.config import OperatorConfig
from ivrbot_operator.handlers import Runtime
from ivrbot_operator.main import run
from ivrbot_operator.ports import PortPool

TEST_POOL = PortPool(21000, 21199)


def declare_resources(k: Any) -> None:
    k.resources[IVRBOTS] = kmock.ResourceInfo(
        kind=d.KIND, singular="ivrbot", namespaced=True, shortnames={d.SHORT_NAME},
        verbs={"list", "watch", "get", "patch", "create", "delete", "update"}, subresources={"status", "scale"})
    for plural, kind in [("pods", "Pod"), ("configmaps", "ConfigMap"), ("events", "Event")]:
        k.resources[f"v1/{plural}"] = kmock.ResourceInfo(
            kind=kind, singular=plural[:-1], namespaced=True,
            verbs={"list", "watch", "get", "patch", "create", "delete", "update"})
    k.resources["coordination.k8s.io/v1/leases"] = kmock.ResourceInfo(
        kind="Lease", singular="lease", namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete", "update"})
    # kopf waits until these are discovered, even with scanning disabled.
    k.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"list", "watch", "get"})
    k.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        verbs={"list", "watch", "get"})


class OperatorHandle:
    def __init__(self, task: asyncio.Task[Runtime | None], stop: asyncio.Event, ready: asyncio.Event) -> None:
        self.task, self.stop_flag, self.ready = task, stop, ready

    async def stop(self) -> Runtime | None:
        self.stop_flag.set()
        return await asyncio.wait_for(self.task, timeout=30)


@pytest.fixture()
def start_operator(kmock: Any) -> Callable[..., contextlib.AbstractAsyncContextManager[OperatorHandle]]:
    declare_resources(kmock)
    url = str(kmock.url).rstrip("/")

    @contextlib.asynccontextmanager
    async def starter(
        pool: PortPool = TEST_POOL, wait_ready: bool = True, **extra: Any,
    ) -> AsyncIterator[OperatorHandle]:
        settings: dict[str, Any] = {"reconcile_interval": 0.2, "liveness_endpoint": None, **extra}
        config = OperatorConfig(pool=pool, namespaces=(NS,), **settings)
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url)

        def configure(settings: kopf.OperatorSettings) -> None:
            settings.scanning.disabled = True
            settings.watching.reconnect_backoff = 0.1
            settings.watching.server_timeout = 5
            settings.watching.client_timeout = 10
            settings.networking.request_timeout = 10
            settings.batching.idle_timeout = 0.05
            settings.batching.batch_window = 0.01
            settings.batching.exit_timeout = 2
            settings.execution.max_workers = 4

        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run(config, client=client, registry=registry, configure=configure,
                                       stop_flag=stop, ready_flag=ready))
        handle = OperatorHandle(task, stop, ready)
        try:
            if wait_ready:
                await asyncio.wait_for(ready.wait(), timeout=30)
            yield handle
        finally:
            if not task.done():
                await handle.stop()
            client.close()  # type: ignore[no-untyped-call]

    return starter
