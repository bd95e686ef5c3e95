"""The ready bots as an OpenSIPS dispatcher set: a db_text table in a ConfigMap.

OpenSIPS mounts the ConfigMap as its db_text directory (`db_url = "text:///..."`),
so the ConfigMap carries both the `dispatcher` table (schema version 9, OpenSIPS
3.x) and the `version` table db_text needs. Rendering is pure; the optional
`ds_reload` over the management interface is the only I/O here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ivrbot_operator import defaults as d
from ivrbot_operator.desired import Owner

DISPATCHER_HEADER = (
    "id(int,auto) setid(int) destination(string) socket(string,null) state(int) probe_mode(int) "
    "weight(string) priority(int) attrs(string,null) description(string,null)"
)
VERSION_TABLE = "table_name(string) table_version(int)\ndispatcher:9\n"
PROBE_ALWAYS = 1  # OpenSIPS pings every destination with OPTIONS, not only inactive ones.


@dataclass(frozen=True, order=True)
class Destination:
    host_ip: str
    sip_port: int
    pod: str


def _escape(value: str) -> str:
    """db_text separates columns with ':'; a literal one is written '\\:'."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("\n", "\\n")


def render_table(set_id: int, weight: int, priority: int, destinations: Iterable[Destination]) -> str:
    """The db_text `dispatcher` file; same input, same bytes (so changes are detectable)."""
    lines = [DISPATCHER_HEADER]
    for row_id, dest in zip(itertools.count(1), sorted(destinations), strict=False):
        uri = f"sip:{dest.host_ip}:{dest.sip_port}"
        cols = [str(row_id), str(set_id), _escape(uri), "", "0", str(PROBE_ALWAYS), str(weight), str(priority),
                "", _escape(dest.pod)]
        lines.append(":".join(cols))
    return "\n".join(lines) + "\n"


def configmap_name(bot: str) -> str:
    return f"{bot}-dispatcher"


def desired_configmap(owner: Owner, table: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(owner.name),
            "namespace": owner.namespace,
            "labels": {d.LABEL_BOT: owner.name, d.LABEL_MANAGED_BY: d.MANAGED_BY, d.LABEL_DISPATCHER: "true"},
            "ownerReferences": [owner.reference()],
        },
        "data": {"dispatcher": table, "version": VERSION_TABLE},
    }


def parse_table(text: str) -> list[list[str]]:
    """Rows of a rendered table, unescaped (for tests and for reading back a ConfigMap)."""
    rows: list[list[str]] = []
    for line in text.splitlines()[1:]:
        cols: list[str] = []
        cur: list[str] = []
        chars = iter(line)
        for ch in chars:
            if ch == "\\":
                nxt = next(chars, "")
                cur.append("\n" if nxt == "n" else nxt)
            elif ch == ":":
                cols.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        cols.append("".join(cur))
        rows.append(cols)
    return rows


class MIError(Exception):
    pass


MI_TIMEOUT = aiohttp.ClientTimeout(total=5)


async def mi_call(session: aiohttp.ClientSession, mi_url: str, method: str) -> Any:
    """One JSON-RPC call to OpenSIPS's mi_http; MIError for anything but a JSON-RPC result
    (an error object, a non-200 answer, or a page that is not JSON at all, e.g. a wrong path)."""
    payload = {"jsonrpc": "2.0", "method": method, "id": 1}
    async with session.post(mi_url, json=payload, timeout=MI_TIMEOUT) as resp:
        text = await resp.text(errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            raise MIError(f"{method}: HTTP {resp.status}, not a JSON-RPC answer: {text[:80]!r}") from None
        if resp.status != 200 or not isinstance(body, dict) or "error" in body or "result" not in body:
            raise MIError(f"{method} failed: HTTP {resp.status} {str(body)[:200]}")
        return body["result"]


async def ds_reload(session: aiohttp.ClientSession, mi_url: str) -> None:
    """Ask OpenSIPS to reload its dispatcher sets."""
    await mi_call(session, mi_url, "ds_reload")


async def ds_list(session: aiohttp.ClientSession, mi_url: str) -> dict[int, frozenset[str]]:
    """What OpenSIPS has loaded: set id -> destination URIs."""
    return parse_ds_list(await mi_call(session, mi_url, "ds_list"))


def _key(obj: Mapping[str, Any], *names: str) -> Any:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    return next((lowered[n] for n in names if n in lowered), None)


def parse_ds_list(result: Any) -> dict[int, frozenset[str]]:
    """The `ds_list` result of OpenSIPS 3.x/4.x: {"PARTITIONS": [{"name", "SETS": [{"id",
    "Destinations": [{"URI", "state", ...}]}]}]}. Read tolerantly (key case, a result without
    partitions, a partition or set with nothing loaded has no array at all); the sets of every
    partition are merged."""
    if not isinstance(result, Mapping):
        raise MIError(f"ds_list: unexpected answer {str(result)[:200]}")
    partitions = _key(result, "partitions")
    parts = partitions if isinstance(partitions, list) else [result]
    sets: dict[int, set[str]] = {}
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for entry in _key(part, "sets", "set") or []:
            if not isinstance(entry, Mapping):
                continue
            try:
                set_id = int(_key(entry, "id", "setid"))
            except (TypeError, ValueError):
                continue
            uris = sets.setdefault(set_id, set())
            for dest in _key(entry, "destinations", "destination") or []:
                uri = _key(dest, "uri") if isinstance(dest, Mapping) else dest
                if isinstance(uri, str) and uri:
                    uris.add(uri.strip().lower())
    return {k: frozenset(v) for k, v in sets.items()}


def destination_uris(destinations: Iterable[Destination]) -> frozenset[str]:
    """The URIs render_table writes, as ds_list shows them."""
    return frozenset(f"sip:{dest.host_ip}:{dest.sip_port}".lower() for dest in destinations)


@dataclass
class _Peer:
    synced: bool = False
    failures: int = 0
    next_at: float = 0.0
    reason: str = "Pending"
    problem: str = ""


class DispatcherSync:
    """Bring every OpenSIPS (an HA pair has two MI URLs) to the table the operator wrote, and
    know that it did. After a change: ds_reload, then read back ds_list and compare; on an
    error or a mismatch retry with exponential backoff, without end. The kubelet updates a
    mounted ConfigMap up to about a minute after it changes, so a mismatch is "Pending" for
    `grace` seconds, then "StaleTable". A synced OpenSIPS is read back (no reload: that would
    reset its probing state) every `backoff_max` seconds."""

    def __init__(self, urls: Iterable[str], set_id: int, grace: float = 90.0, backoff: float = 5.0,
                 backoff_max: float = 60.0) -> None:
        self.urls = tuple(urls)
        self.set_id, self.grace, self.backoff, self.backoff_max = set_id, grace, backoff, backoff_max
        self.expected: frozenset[str] | None = None
        self.changed_at = 0.0
        self._peers = {url: _Peer() for url in self.urls}

    def want(self, set_id: int, expected: frozenset[str], now: float) -> bool:
        """Record the table just written; True when it differs from the one being synced."""
        if set_id == self.set_id and expected == self.expected:
            return False
        self.set_id, self.expected, self.changed_at = set_id, expected, now
        self._peers = {url: _Peer() for url in self.urls}
        for peer in self._peers.values():
            peer.next_at = now
        return True

    def due(self, now: float) -> list[tuple[str, bool]]:
        """(url, reload first?) for every OpenSIPS to contact now."""
        return [(url, not p.synced) for url, p in self._peers.items() if now >= p.next_at]

    def check(self, url: str, loaded: Mapping[int, frozenset[str]], now: float) -> tuple[bool, bool]:
        """Compare what OpenSIPS at `url` listed with the table: (matches, deserves a warning)."""
        peer = self._peers[url]
        have = loaded.get(self.set_id, frozenset())
        if have == self.expected:
            peer.synced, peer.failures, peer.reason, peer.problem = True, 0, "Verified", ""
            peer.next_at = now + self.backoff_max
            return True, False
        want = sorted(self.expected or ())
        stale = now - self.changed_at >= self.grace
        warn = self.failed(url, "StaleTable" if stale else "Pending",
                           f"OpenSIPS at {url} lists {sorted(have)} in set {self.set_id}, the table has {want}", now)
        return False, warn and stale

    def failed(self, url: str, reason: str, problem: str, now: float) -> bool:
        """Schedule the next try; True when this deserves a warning (a new state, or the backoff
        still growing), so a long outage logs a handful of lines, not one per reconcile."""
        peer = self._peers[url]
        new_state = (peer.reason, peer.problem) != (reason, problem)
        peer.synced = False
        peer.failures += 1
        delay = min(self.backoff * 2 ** (peer.failures - 1), self.backoff_max)
        peer.next_at = now + delay
        peer.reason, peer.problem = reason, problem
        return new_state or delay < self.backoff_max

    def condition(self) -> tuple[bool, str, str]:
        """(status, reason, message) of the DispatcherSynced condition."""
        bad = [(url, p) for url, p in self._peers.items() if not p.synced]
        if not bad:
            return True, "Verified", (f"{len(self._peers)} OpenSIPS list the {len(self.expected or ())}"
                                      f" ready bot(s) of dispatcher set {self.set_id}")
        for reason in ("ReloadFailed", "StaleTable"):
            worst = [p.problem for _, p in bad if p.reason == reason]
            if worst:
                return False, reason, "; ".join(worst)
        return False, "Pending", "waiting for " + ", ".join(url for url, _ in bad) + " to load the new table"
