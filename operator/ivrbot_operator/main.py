"""`ivrbot-operator`: runs kopf in-process with the IVRBot handlers and a liveness endpoint."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable

import kopf
import kubernetes

from ivrbot_operator.config import OperatorConfig
from ivrbot_operator.handlers import Runtime, build_registry
from ivrbot_operator.kube import KubeApi, load_client


async def run(
    config: OperatorConfig,
    *,
    client: kubernetes.client.ApiClient | None = None,
    registry: kopf.OperatorRegistry | None = None,
    configure: Callable[[kopf.OperatorSettings], None] | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> Runtime:
    """Run until stopped; returns the runtime (its allocator) for inspection by tests."""
    rt = Runtime.create(config, KubeApi(client if client is not None else load_client()))
    reg = build_registry(rt, registry=registry, configure=configure)
    await kopf.operator(
        registry=reg,
        standalone=True,  # one replica with the Recreate strategy: no peering needed
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
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
