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
import kubernetes

from ivrbot_operator import defaults as d
from ivrbot_operator.conditions import Condition, merge_conditions
from ivrbot_operator.config import OperatorConfig
from ivrbot_operator.desired import Owner, allocation_fits, desired_pod, selector_string
from ivrbot_operator.dispatcher import (
    Destination,
    DispatcherSync,
    MIError,
    configmap_name,
    desired_configmap,
    destination_uris,
    ds_list,
    ds_reload,
    render_table,
)
from ivrbot_operator.kube import KubeApi, api_error
from ivrbot_operator.ports import OwnerKey, PodPorts, PortAllocator, Shortage, rebuild
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
    syncs: dict[OwnerKey, DispatcherSync] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def create(cls, config: OperatorConfig, api: KubeApi) -> Runtime:
        return cls(config=config, api=api, allocator=PortAllocator(config.pool))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _restore(rt: Runtime, pods: kopf.Index[OwnerKey, PodState],
             allocations: kopf.Index[OwnerKey, list[dict[str, Any]]], logger: Logger) -> None:
    """Rebuild the allocator from every bot pod's port annotation and every IVRBot's status
    (kopf fills indexes before any handler runs)."""
    if rt.restored:
        return
    rt.restored = True
    live: dict[OwnerKey, dict[int, PodPorts]] = {}
    for owner, states in pods.items():
        for state in states:
            if state.ports is not None:
                live.setdefault(owner, {})[state.ordinal] = state.ports
    recorded: dict[OwnerKey, dict[int, PodPorts]] = {}
    for owner, entries in allocations.items():
        for entry_list in entries:
            for entry in entry_list:
                try:
                    recorded.setdefault(owner, {})[int(entry["ordinal"])] = PodPorts.from_status(entry)
                except (KeyError, TypeError, ValueError) as exc:
                    logger.warning(f"Ignoring a malformed allocation of {owner}: {exc}")
    rt.allocator, refused = rebuild(rt.config.pool, live, recorded)
    for owner, ordinals in refused.items():
        logger.error(f"Allocations of {owner} overlap others and were dropped: ordinals {ordinals}")
    logger.info(f"Port allocator restored: {len(rt.allocator.owners())} IVRBot(s), "
                f"{rt.allocator.free_count()} of {rt.config.pool.size} ports free")


def _observed(pods: kopf.Index[OwnerKey, PodState], owner: OwnerKey) -> dict[int, PodState]:
    found: dict[int, PodState] = {}
    for state in pods.get(owner, []):
        found[state.ordinal] = state
    return found


async def _sync_opensips(rt: Runtime, key: OwnerKey, set_id: int, dests: list[Destination],
                         logger: Logger) -> Condition | None:
    """Reload every OpenSIPS whose turn it is and read its table back (see DispatcherSync)."""
    urls = rt.config.opensips_mi_urls
    if not urls:
        return None
    sync = rt.syncs.get(key)
    if sync is None:
        sync = rt.syncs[key] = DispatcherSync(urls, set_id, rt.config.reload_grace, rt.config.reload_backoff,
                                              rt.config.reload_backoff_max)
    now = rt.clock()
    sync.want(set_id, destination_uris(dests), now)
    if rt.http is None:
        rt.http = aiohttp.ClientSession()
    for url, reload in sync.due(now):
        try:
            if reload:
                await ds_reload(rt.http, url)
            loaded = await ds_list(rt.http, url)
        except (aiohttp.ClientError, TimeoutError, MIError) as exc:
            if sync.failed(url, "ReloadFailed", f"OpenSIPS at {url}: {exc or type(exc).__name__}", rt.clock()):
                logger.warning(f"OpenSIPS at {url} did not take the dispatcher table, will retry: {exc}")
            continue
        matches, warn = sync.check(url, loaded, rt.clock())
        if matches:
            logger.info(f"OpenSIPS at {url} lists the {len(sync.expected or ())} bot(s) of set {set_id}")
        elif warn:
            logger.warning(f"OpenSIPS at {url} still lists an old dispatcher table; reloading with backoff")
    status, reason, message = sync.condition()
    return Condition("DispatcherSynced", status, reason, message)


async def _publish_dispatcher(rt: Runtime, owner: Owner, spec: BotSpec, observed: Mapping[int, PodState],
                              logger: Logger) -> Condition | None:
    dests = [Destination(p.host_ip, p.sip_port, p.name) for o, p in observed.items()
             if p.ready and p.host_ip and p.sip_port and o < spec.replicas]
    table = render_table(spec.dispatcher_set_id, spec.dispatcher_weight, spec.dispatcher_priority, dests)
    try:
        if await rt.api.apply_configmap(desired_configmap(owner, table)):
            logger.info(f"Dispatcher set {spec.dispatcher_set_id} now has {len(dests)} bot(s)")
    except kubernetes.client.ApiException as exc:
        logger.warning(f"Could not write the dispatcher ConfigMap: {api_error(exc)}")
    return await _sync_opensips(rt, (owner.namespace, owner.name), spec.dispatcher_set_id, dests, logger)


def _status(
    body: kopf.Body, spec: BotSpec, key: OwnerKey, rt: Runtime, observed: Mapping[int, PodState],
    desired_hashes: Mapping[int, str], shortage: Shortage | None, sip_conflict: str | None,
    create_failures: list[str], dispatcher: Condition | None,
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
    if sip_conflict:
        ports_cond = Condition("PortsAllocated", False, "SipPortTaken", f"{sip_conflict}; pods left as they are")
    elif shortage:
        ports_cond = Condition("PortsAllocated", False, "PoolExhausted", f"pool {rt.config.pool}: {shortage}")
    else:
        ports_cond = Condition("PortsAllocated", True, "Allocated",
                               f"{len(held)} pod(s) hold ports; {rt.allocator.free_count()} ports free in the pool")
    all_ready = ready == spec.replicas and updated == spec.replicas and len(live) == spec.replicas
    if create_failures:
        ready_cond = Condition("Ready", False, "PodCreateFailed", "; ".join(create_failures))
    elif all_ready and ports_cond.status:
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
    if dispatcher is not None:
        conds.append(dispatcher)
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


def _warn_on_change(body: kopf.Body, status: dict[str, Any], types: Mapping[str, tuple[str, ...] | None]) -> None:
    """One Warning event when a condition turns bad or its message changes, not one per reconcile.
    `types`: condition type -> the reasons worth an event (None: any False)."""
    before = {c.get("type"): c for c in body.status.get("conditions") or []}
    for cond in status["conditions"]:
        reasons = types.get(cond["type"], ())
        if cond["status"] != "False" or (reasons is not None and cond["reason"] not in reasons):
            continue
        old = before.get(cond["type"]) or {}
        if (old.get("status"), old.get("reason"), old.get("message")) != ("False", cond["reason"], cond["message"]):
            kopf.warn(body, reason=cond["reason"], message=cond["message"])


async def _apply(rt: Runtime, namespace: str, todo_delete: list[str], todo_create: list[dict[str, Any]],
                 logger: Logger) -> list[str]:
    """Delete and create pod by pod; a refused call is reported and the rest goes on."""
    failures: list[str] = []
    for pod in todo_delete:
        try:
            logger.info(f"Deleting pod {pod} (drains its calls first)")
            await rt.api.delete_pod(namespace, pod)
        except kubernetes.client.ApiException as exc:
            logger.error(f"Deleting pod {pod} failed: {api_error(exc)}")
    for manifest in todo_create:
        name = manifest["metadata"]["name"]
        try:
            if await rt.api.create_pod(manifest):
                logger.info(f"Created pod {name}")
        except kubernetes.client.ApiException as exc:
            logger.error(f"Creating pod {name} failed: {api_error(exc)}")
            failures.append(f"creating pod {name} failed: {api_error(exc)}")
    return failures


async def reconcile(
    rt: Runtime, body: kopf.Body, patch: kopf.Patch, logger: Logger,
    bot_pods: kopf.Index[OwnerKey, PodState], bot_allocations: kopf.Index[OwnerKey, list[dict[str, Any]]],
) -> None:
    _restore(rt, bot_pods, bot_allocations, logger)
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

        observed = _observed(bot_pods, key)
        # A taken fixed SIP port is a spec that cannot be applied: the running pods stay as they are.
        sip_conflict = None
        if spec.sip_port is not None and not rt.allocator.reserve_fixed_sip(key, spec.sip_port):
            sip_conflict = rt.allocator.sip_conflict(key, spec.sip_port)
        elif spec.sip_port is None:
            rt.allocator.reserve_fixed_sip(key, None)
        shortage = None
        desired: dict[int, dict[str, Any]] = {}
        failures: list[str] = []
        if sip_conflict is None:
            shortage = rt.allocator.sync(key, spec.replicas, spec.rtp_ports, observed)
            held, nxt = rt.allocator.of(key), rt.allocator.replacements(key)
            for o, current in held.items():
                ports = nxt.get(o, current)
                if o < spec.replicas and allocation_fits(spec, ports):
                    desired[o] = desired_pod(owner, spec, o, ports)
            todo = plan(spec.replicas, desired, observed)
            failures = await _apply(rt, namespace, todo.delete, todo.create, logger)
        hashes = {o: m["metadata"]["annotations"][d.ANNOTATION_SPEC_HASH] for o, m in desired.items()}
        dispatcher = await _publish_dispatcher(rt, owner, spec, observed, logger)
        status = _status(body, spec, key, rt, observed, hashes, shortage, sip_conflict, failures, dispatcher)
        _warn_on_change(body, status, {"PortsAllocated": None, "Ready": ("PodCreateFailed",),
                                       "DispatcherSynced": ("ReloadFailed", "StaleTable")})
        _set_status(body, patch, status)


async def finalize(
    rt: Runtime, body: kopf.Body, logger: Logger, bot_pods: kopf.Index[OwnerKey, PodState],
    bot_allocations: kopf.Index[OwnerKey, list[dict[str, Any]]],
) -> None:
    """Delete the pods, wait until they are gone (they hold host ports while draining), then free the ports."""
    _restore(rt, bot_pods, bot_allocations, logger)
    name, namespace = body.meta["name"], body.meta["namespace"]
    key: OwnerKey = (namespace, name)
    owner = Owner(name=name, namespace=namespace, uid=str(body.meta.get("uid", "")))
    async with rt.locks.setdefault(key, asyncio.Lock()):
        observed = _observed(bot_pods, key)
        if await rt.api.read_configmap(namespace, configmap_name(name)) is not None:
            await rt.api.apply_configmap(desired_configmap(owner, render_table(1, 1, 0, [])))
        sync = rt.syncs.get(key)
        if observed:
            await _sync_opensips(rt, key, sync.set_id if sync else 1, [], logger)
        for pod in observed.values():
            if not pod.terminating:
                await rt.api.delete_pod(namespace, pod.name)
        if observed:
            raise kopf.TemporaryError(f"waiting for {len(observed)} pod(s) to drain and terminate",
                                      delay=max(0.1, rt.config.reconcile_interval))
        rt.allocator.release_owner(key)
        rt.syncs.pop(key, None)
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
        await finalize(rt, kw["body"], kw["logger"], kw["bot_pods"], kw["bot_allocations"])

    return reg
