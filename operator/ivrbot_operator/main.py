"""`ivrbot-operator`: runs kopf in-process with the IVRBot handlers and a liveness endpoint."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable

import kopf
import kubernetes

from ivrbot_operator.config import OperatorConfig
from ivrbot_operator.handlers import Runtime, build_registry
from ivrbot_operator.kube import KubeApi, load_client
from ivrbot_operator.leader import LeaseElector


async def run(
    config: OperatorConfig,
    *,
    client: kubernetes.client.ApiClient | None = None,
    registry: kopf.OperatorRegistry | None = None,
    configure: Callable[[kopf.OperatorSettings], None] | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> Runtime | None:
    """Run until stopped; returns the runtime (its allocator) for inspection by tests, or None
    when stopped while standing by. With a lease namespace configured, kopf (and with it every
    allocation) runs only while this operator holds the Lease."""
    client = client if client is not None else load_client()
    stop = stop_flag if stop_flag is not None else asyncio.Event()
    elector = None
    if config.lease_namespace:
        identity = config.identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        elector = LeaseElector(client, config.lease_namespace, config.lease_name, identity, config.lease_duration)
        if not await elector.acquire(stop):
            elector.close()
            return None
    rt = Runtime.create(config, KubeApi(client))
    reg = build_registry(rt, registry=registry, configure=configure)
    kopf_stop, done = asyncio.Event(), asyncio.Event()
    # Renew until kopf has fully stopped (its last handlers may still write), then hand over.
    holder = asyncio.create_task(elector.hold(done)) if elector is not None else None

    async def supervise() -> None:
        waiters = [asyncio.create_task(stop.wait())] + ([holder] if holder is not None else [])
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
        kopf_stop.set()

    supervisor = asyncio.create_task(supervise())
    try:
        await kopf.operator(
            registry=reg,
            standalone=True,  # exclusivity comes from the Lease, not from kopf peering
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness_endpoint,
            stop_flag=kopf_stop,
            ready_flag=ready_flag,
        )
    finally:
        done.set()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        if holder is not None and elector is not None:
            await holder
            await elector.release()
            elector.close()
    return rt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivrbot-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=None,
                        help="watch this namespace (repeatable); default: IVRBOT_OPERATOR_NAMESPACES or all")
    parser.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = OperatorConfig.from_env(os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    if args.namespace:
        config = OperatorConfig(**{**config.__dict__, "namespaces": tuple(args.namespace)})
    if args.liveness:
        config = OperatorConfig(**{**config.__dict__, "liveness_endpoint": args.liveness})
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
