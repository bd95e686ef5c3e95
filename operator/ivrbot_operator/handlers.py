"""The kopf handlers: read the indexes, compute the desired state, apply the difference.

All decisions live in pure modules (spec, ports, desired, rollout, dispatcher,
conditions); this file only wires them to kopf and the API. Handlers are built on a
fresh registry per operator instance, so tests can run several operators in turn.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from ivrbot_operator import defaults as d
from ivrbot_operator.conditions import Condition, merge_conditions
from ivrbot_operator.config import OperatorConfig
from ivrbot_operator.desired import Owner, allocation_fits, desired_pod, selector_string
from ivrbot_operator.dispatcher import (
    Destination,
    MIError,
    ReloadSchedule,
    configmap_name,
    desired_configmap,
    ds_reload,
    render_table,
)
from ivrbot_operator.kube import KubeApi
from ivrbot_operator.ports import OwnerKey, PodPorts, PortAllocator, Shortage
from ivrbot_operator.rollout import PodState, plan
from ivrbot_operator.spec import BotSpec, parse_spec

Logger = logging.Logger | logging.LoggerAdapter[Any]

RESOURCE = (d.GROUP, d.VERSION, d.PLURAL)


@dataclass
class Runtime:
    """Everything one operator instance holds in memory; rebuilt from the cluster at start."""

    config: OperatorConfig
    api: KubeApi
    allocator: PortAllocator
    restored: bool = False
    locks: dict[OwnerKey, asyncio.Lock] = field(default_factory=dict)
    reloads: dict[OwnerKey, ReloadSchedule] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def create(cls, config: OperatorConfig, api: KubeApi) -> Runtime:
        return cls(config=config, api=api, allocator=PortAllocator(config.pool))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _restore(rt: Runtime, allocations: kopf.Index[OwnerKey, list[dict[str, Any]]], logger: Logger) -> None:
    """Rebuild the allocator from every IVRBot's status (kopf fills indexes before any handler runs)."""
    if rt.restored:
        return
    rt.restored = True
    for owner, entries in allocations.items():
        pods: dict[int, PodPorts] = {}
        for entry_list in entries:
            for entry in entry_list:
                try:
                    pods[int(entry["ordinal"])] = PodPorts.from_status(entry)
                except (KeyError, TypeError, ValueError) as exc:
                    logger.warning(f"Ignoring a malformed allocation of {owner}: {exc}")
        refused = rt.allocator.restore(owner, pods)
        if refused:
            logger.error(f"Allocations of {owner} overlap others and were dropped: ordinals {refused}")
    logger.info(f"Port allocator restored: {len(rt.allocator.owners())} IVRBot(s), "
                f"{rt.allocator.free_count()} of {rt.config.pool.size} ports free")


def _observed(pods: kopf.Index[OwnerKey, PodState], owner: OwnerKey) -> dict[int, PodState]:
    found: dict[int, PodState] = {}
    for state in pods.get(owner, []):
        found[state.ordinal] = state
    return found


def _allocate(rt: Runtime, key: OwnerKey, spec: BotSpec, observed: Mapping[int, PodState]) -> Shortage | None:
    held = rt.allocator.of(key)
    # Ports of a gone pod whose ordinal is surplus, or whose block no longer fits the spec, go back.
    rt.allocator.release(key, [
        o for o, p in held.items()
        if o not in observed and (o >= spec.replicas or not allocation_fits(spec, p))])
    return rt.allocator.allocate(key, range(spec.replicas), spec.rtp_ports)


async def _publish_dispatcher(rt: Runtime, owner: Owner, spec: BotSpec, observed: Mapping[int, PodState],
                              logger: Logger) -> int:
    key = (owner.namespace, owner.name)
    dests = [Destination(p.host_ip, p.sip_port, p.name) for o, p in observed.items()
             if p.ready and p.host_ip and p.sip_port and o < spec.replicas]
    table = render_table(spec.dispatcher_set_id, spec.dispatcher_weight, spec.dispatcher_priority, dests)
    schedule = rt.reloads.setdefault(key, ReloadSchedule(rt.config.reload_window, rt.config.reload_retry))
    if await rt.api.apply_configmap(desired_configmap(owner, table)):
        logger.info(f"Dispatcher set {spec.dispatcher_set_id} now has {len(dests)} bot(s)")
        schedule.changed(rt.clock())
    await _maybe_reload(rt, schedule, logger)
    return len(dests)


async def _maybe_reload(rt: Runtime, schedule: ReloadSchedule, logger: Logger) -> None:
    if not rt.config.opensips_mi_url or not schedule.due(rt.clock()):
        return
    if rt.http is None:
        rt.http = aiohttp.ClientSession()
    try:
        await ds_reload(rt.http, rt.config.opensips_mi_url)
        schedule.reloaded(rt.clock())
    except (aiohttp.ClientError, TimeoutError, MIError) as exc:
        logger.warning(f"OpenSIPS ds_reload at {rt.config.opensips_mi_url} failed, will retry: {exc}")


def _status(
    body: kopf.Body, spec: BotSpec, key: OwnerKey, rt: Runtime, observed: Mapping[int, PodState],
    desired_hashes: Mapping[int, str], shortage: Shortage | None, sip_taken: bool,
) -> dict[str, Any]:
    held = rt.allocator.of(key)
    live = {o: p for o, p in observed.items() if not p.terminating}
    ready = sum(1 for o, p in live.items() if p.ready and o < spec.replicas)
    updated = sum(1 for o, p in live.items() if o < spec.replicas and p.spec_hash == desired_hashes.get(o))
    allocations = []
    for ordinal, ports in sorted(held.items()):
        entry: dict[str, Any] = {"pod": f"{key[1]}-{ordinal}", "ordinal": ordinal, **ports.to_status()}
        pod = observed.get(ordinal)
        if pod and pod.node:
            entry["node"] = pod.node
        if pod and pod.host_ip:
            entry["hostIP"] = pod.host_ip
        allocations.append(entry)
    if sip_taken:
        ports_cond = Condition("PortsAllocated", False, "SipPortTaken",
                               f"spec.sip.port {spec.sip_port} is held by another IVRBot's pods")
    elif shortage:
        ports_cond = Condition("PortsAllocated", False, "PoolExhausted", f"pool {rt.config.pool}: {shortage}")
    else:
        ports_cond = Condition("PortsAllocated", True, "Allocated",
                               f"{len(held)} pod(s) hold ports; {rt.allocator.free_count()} ports free in the pool")
    all_ready = ready == spec.replicas and updated == spec.replicas and len(live) == spec.replicas
    if all_ready and ports_cond.status:
        ready_cond = Condition("Ready", True, "AllPodsReady", f"{ready}/{spec.replicas} bot pods ready")
    elif not ports_cond.status:
        ready_cond = Condition("Ready", False, "PortsUnavailable", ports_cond.message)
    elif updated < min(len(live), spec.replicas):
        ready_cond = Condition("Ready", False, "RollingUpdate",
                               f"{updated}/{spec.replicas} pods updated, {ready} ready")
    else:
        ready_cond = Condition("Ready", False, "PodsNotReady", f"{ready}/{spec.replicas} bot pods ready")
    generation = body.meta.get("generation")
    conds = [Condition("SpecValid", True, "Valid", "spec accepted"), ports_cond, ready_cond]
    status: dict[str, Any] = {
        "replicas": len(live),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "desiredReplicas": spec.replicas,
        "replicasText": f"{ready}/{spec.replicas}",
        "selector": selector_string(key[1]),
        "allocations": allocations,
        "conditions": merge_conditions(body.status.get("conditions"), conds, _now(), generation),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def _set_status(body: kopf.Body, patch: kopf.Patch, status: dict[str, Any]) -> None:
    """Patch only what changed, so an idle operator writes nothing."""
    for name, value in status.items():
        if body.status.get(name) != value:
            patch.status[name] = value


async def reconcile(
    rt: Runtime, body: kopf.Body, patch: kopf.Patch, logger: Logger,
    bot_pods: kopf.Index[OwnerKey, PodState], bot_allocations: kopf.Index[OwnerKey, list[dict[str, Any]]],
) -> None:
    _restore(rt, bot_allocations, logger)
    name, namespace = body.meta["name"], body.meta["namespace"]
    key: OwnerKey = (namespace, name)
    owner = Owner(name=name, namespace=namespace, uid=str(body.meta.get("uid", "")))
    async with rt.locks.setdefault(key, asyncio.Lock()):
        spec, problems = parse_spec(dict(body.spec), rt.config.pool, rt.config.images)
        if spec is None:
            message = "; ".join(str(p) for p in problems)
            previous = [c for c in body.status.get("conditions") or [] if c.get("type") == "SpecValid"]
            if not previous or previous[0].get("message") != message:
                kopf.warn(body, reason="InvalidSpec", message=f"spec refused: {message}")
            logger.error(f"Spec refused, children left as they are: {message}")
            generation = body.meta.get("generation")
            conds = [Condition("SpecValid", False, "InvalidSpec", message),
                     Condition("Ready", False, "InvalidSpec", f"spec refused: {message}")]
            kept = [c for c in body.status.get("conditions") or [] if c.get("type") not in ("SpecValid", "Ready")]
            status: dict[str, Any] = {
                "conditions": kept + merge_conditions(body.status.get("conditions"), conds, _now(), generation)}
            if generation is not None:
                status["observedGeneration"] = generation
            _set_status(body, patch, status)
            return

        sip_taken = not rt.allocator.reserve_fixed_sip(key, spec.sip_port)
        observed = _observed(bot_pods, key)
        shortage = None if sip_taken else _allocate(rt, key, spec, observed)
        held = rt.allocator.of(key)
        desired = {o: desired_pod(owner, spec, o, p) for o, p in held.items()
                   if o < spec.replicas and allocation_fits(spec, p) and not sip_taken}
        stale = frozenset(o for o, p in held.items() if o < spec.replicas and not allocation_fits(spec, p))
        todo = plan(spec.replicas, desired, observed, stale)
        for pod in todo.delete:
            logger.info(f"Deleting pod {pod} (drains its calls first)")
            await rt.api.delete_pod(namespace, pod)
        for manifest in todo.create:
            if await rt.api.create_pod(manifest):
                logger.info(f"Created pod {manifest['metadata']['name']}")
        hashes = {o: m["metadata"]["annotations"][d.ANNOTATION_SPEC_HASH] for o, m in desired.items()}
        previous_ports = [c for c in body.status.get("conditions") or [] if c.get("type") == "PortsAllocated"]
        status = _status(body, spec, key, rt, observed, hashes, shortage, sip_taken)
        ports_cond = next(c for c in status["conditions"] if c["type"] == "PortsAllocated")
        changed = not previous_ports or previous_ports[0]["message"] != ports_cond["message"]
        if ports_cond["status"] == "False" and changed:
            kopf.warn(body, reason=ports_cond["reason"], message=ports_cond["message"])
        await _publish_dispatcher(rt, owner, spec, observed, logger)
        _set_status(body, patch, status)


async def finalize(
    rt: Runtime, body: kopf.Body, logger: Logger, bot_pods: kopf.Index[OwnerKey, PodState],
) -> None:
    """Delete the pods, wait until they are gone (they hold host ports while draining), then free the ports."""
    name, namespace = body.meta["name"], body.meta["namespace"]
    key: OwnerKey = (namespace, name)
    owner = Owner(name=name, namespace=namespace, uid=str(body.meta.get("uid", "")))
    async with rt.locks.setdefault(key, asyncio.Lock()):
        observed = _observed(bot_pods, key)
        if await rt.api.read_configmap(namespace, configmap_name(name)) is not None:
            await rt.api.apply_configmap(desired_configmap(owner, render_table(1, 1, 0, [])))
        schedule = rt.reloads.setdefault(key, ReloadSchedule(rt.config.reload_window, rt.config.reload_retry))
        if observed:
            schedule.changed(rt.clock())
            await _maybe_reload(rt, schedule, logger)
        for pod in observed.values():
            if not pod.terminating:
                await rt.api.delete_pod(namespace, pod.name)
        if observed:
            raise kopf.TemporaryError(f"waiting for {len(observed)} pod(s) to drain and terminate",
                                      delay=max(0.1, rt.config.reconcile_interval))
        rt.allocator.release_owner(key)
        rt.reloads.pop(key, None)
        rt.locks.pop(key, None)
        logger.info(f"Ports released; {rt.allocator.free_count()} of {rt.config.pool.size} free")


def build_registry(
    rt: Runtime, *, registry: kopf.OperatorRegistry | None = None,
    configure: Callable[[kopf.OperatorSettings], None] | None = None,
) -> kopf.OperatorRegistry:
    """A registry with every handler; without a given registry, log in like kubectl (in-cluster or kubeconfig)."""
    reg = registry if registry is not None else kopf.OperatorRegistry()
    if registry is None:
        kopf.on.login(registry=reg)(kopf.login_via_client)

    @kopf.on.startup(registry=reg)
    def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{d.GROUP}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=d.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=d.GROUP)
        settings.posting.level = logging.WARNING
        if configure is not None:
            configure(settings)

    @kopf.on.cleanup(registry=reg)
    async def _cleanup(**_: Any) -> None:
        if rt.http is not None:
            await rt.http.close()
            rt.http = None

    @kopf.on.probe(id="ports_free", registry=reg)
    def _probe(**_: Any) -> int:
        return rt.allocator.free_count()

    # kopf passes everything as keyword arguments; each handler takes what it needs.
    @kopf.index("pods", id="bot_pods", labels={d.LABEL_MANAGED_BY: d.MANAGED_BY, d.LABEL_BOT: kopf.PRESENT},
                registry=reg)
    def bot_pods(**kw: Any) -> dict[OwnerKey, PodState] | None:
        state = PodState.from_pod(kw["body"])
        return None if state is None else {(kw["namespace"], kw["labels"][d.LABEL_BOT]): state}

    @kopf.index(*RESOURCE, id="bot_allocations", registry=reg)
    def bot_allocations(**kw: Any) -> dict[OwnerKey, Any]:
        return {(kw["namespace"], kw["name"]): list(kw["status"].get("allocations") or [])}

    async def _reconcile(**kw: Any) -> None:
        await reconcile(rt, kw["body"], kw["patch"], kw["logger"], kw["bot_pods"], kw["bot_allocations"])

    kopf.on.resume(*RESOURCE, id="reconcile", registry=reg)(_reconcile)
    kopf.on.create(*RESOURCE, id="reconcile", registry=reg)(_reconcile)
    kopf.on.update(*RESOURCE, id="reconcile", registry=reg)(_reconcile)
    kopf.timer(*RESOURCE, id="periodic", interval=rt.config.reconcile_interval, registry=reg)(_reconcile)

    @kopf.on.delete(*RESOURCE, id="release", registry=reg)
    async def _delete(**kw: Any) -> None:
        await finalize(rt, kw["body"], kw["logger"], kw["bot_pods"])

    return reg
