"""Leader election over a coordination.k8s.io/v1 Lease: one operator allocates ports at a time.

The port allocator lives in memory, so two operators running at once (a rolling update,
a second replica, a stuck old pod) would hand out the same host ports. An operator
therefore runs kopf only while it holds the Lease, and stops (the pod restarts and
stands by again) when it cannot renew it in time. Expiry is judged as client-go does,
by how long the record has stayed unchanged on this operator's own clock, never by
comparing another host's timestamps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import kubernetes
import urllib3

logger = logging.getLogger(__name__)


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self, client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
        duration: float = 15.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = kubernetes.client.CoordinationV1Api(client)
        self.namespace, self.name, self.identity, self.duration = namespace, name, identity, duration
        self._clock = clock
        self._seen: tuple[Any, Any] | None = None
        self._seen_at = 0.0
        self.renewed_at: float | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The client is synchronous. Its own thread, not the loop's default executor, which kopf
        replaces and shuts down as it starts and stops."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def retry(self) -> float:
        return max(self.duration / 3, 0.05)

    @property
    def _timeout(self) -> float:
        """No call may outlast a renewal period: a hung request must not keep a lost Lease."""
        return max(self.duration / 3, 1.0)

    async def _read(self) -> dict[str, Any] | None:
        try:
            resp = await self._call(
                self._api.read_namespaced_lease, self.name, self.namespace, _preload_content=False,
                _request_timeout=self._timeout)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], json.loads(cast(Any, resp).data))

    def _spec(self, transitions: int, acquired: str) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": max(int(self.duration), 1),
                "acquireTime": acquired, "renewTime": _micro_time(), "leaseTransitions": transitions}

    async def _patch(self, lease: dict[str, Any], spec: dict[str, Any]) -> None:
        """A merge patch carrying the resourceVersion read: the API server applies it only if the
        Lease is unchanged since (409 otherwise), so of two takers exactly one wins."""
        body: dict[str, Any] = {"spec": spec}
        version = (lease.get("metadata") or {}).get("resourceVersion")
        if version:
            body["metadata"] = {"resourceVersion": version}
        await self._call(self._api.patch_namespaced_lease, self.name, self.namespace, body,
                                _content_type="application/merge-patch+json", _preload_content=False,
                                _request_timeout=self._timeout)

    async def try_acquire(self) -> bool:
        """Take or renew the Lease; False while another live holder has it (or on a write race)."""
        now = self._clock()
        lease = await self._read()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(0, _micro_time())}
            try:
                await self._call(self._api.create_namespaced_lease, self.namespace, cast(Any, body),
                                        _preload_content=False, _request_timeout=self._timeout)
            except kubernetes.client.ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            self.renewed_at = now
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"))
        if record != self._seen:
            self._seen, self._seen_at = record, now
        mine = holder == self.identity
        expired = not holder or now - self._seen_at > float(spec.get("leaseDurationSeconds") or self.duration)
        if not (mine or expired):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = str(spec.get("acquireTime") or "") if mine else ""
        acquired = acquired or _micro_time()
        try:
            await self._patch(lease, self._spec(transitions, acquired))
        except kubernetes.client.ApiException as exc:
            if exc.status in (409, 404):
                return False
            raise
        self.renewed_at = now
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this operator leads; False if stopped first."""
        announced = False
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    logger.info(f"Leading: holding Lease {self.namespace}/{self.name} as {self.identity}")
                    return True
            except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                logger.warning(f"Lease {self.namespace}/{self.name}: {exc}")
            if not announced:
                logger.info(f"Standing by: Lease {self.namespace}/{self.name} is held by {self._seen[0]!r}"
                            if self._seen else f"Standing by for Lease {self.namespace}/{self.name}")
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.retry)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew until stopped; return (the caller stops the operator) once the Lease is lost or
        could not be renewed for two thirds of its duration, before anyone else may take it."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.retry)
            if stop.is_set():
                return
            try:
                if not await self.try_acquire():
                    logger.error(f"Lease {self.namespace}/{self.name} was taken by {self._seen!r}: stopping")
                    return
            except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                logger.warning(f"Lease {self.namespace}/{self.name} renewal failed: {exc}")
            if self.renewed_at is None or self._clock() - self.renewed_at > self.duration * 2 / 3:
                logger.error(f"Lease {self.namespace}/{self.name} not renewed in time: stopping")
                return

    async def release(self) -> None:
        """Hand the Lease over at a clean stop, so a standby operator takes it at once."""
        try:
            lease = await self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            await self._patch(lease, {"holderIdentity": "", "leaseDurationSeconds": 1})  # as client-go does
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            logger.warning(f"Could not release Lease {self.namespace}/{self.name}: {exc}")
