"""The ready bots as an OpenSIPS dispatcher set: a db_text table in a ConfigMap.

OpenSIPS mounts the ConfigMap as its db_text directory (`db_url = "text:///..."`),
so the ConfigMap carries both the `dispatcher` table (schema version 9, OpenSIPS
3.x) and the `version` table db_text needs. Rendering is pure; the optional
`ds_reload` over the management interface is the only I/O here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
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


async def ds_reload(session: aiohttp.ClientSession, mi_url: str) -> None:
    """Ask OpenSIPS (mi_http module, JSON-RPC) to reload its dispatcher sets."""
    payload = {"jsonrpc": "2.0", "method": "ds_reload", "id": 1}
    async with session.post(mi_url, json=payload, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 200 or not isinstance(body, dict) or "error" in body:
            raise MIError(f"ds_reload failed: HTTP {resp.status} {body!r}")


class ReloadSchedule:
    """When to call ds_reload. The kubelet refreshes a mounted ConfigMap up to about a minute
    after it changes, so one reload right away may read the old file: reload at once, then
    every `retry` seconds until `window` seconds after the last change."""

    def __init__(self, window: float = 90.0, retry: float = 15.0) -> None:
        self.window, self.retry = window, retry
        self._changed_at: float | None = None
        self._last_reload: float | None = None

    def changed(self, now: float) -> None:
        self._changed_at, self._last_reload = now, None

    def due(self, now: float) -> bool:
        if self._changed_at is None or now - self._changed_at > self.window:
            return False
        return self._last_reload is None or now - self._last_reload >= self.retry

    def reloaded(self, now: float) -> None:
        self._last_reload = now
