"""The operator's own settings, read from the environment the Helm chart sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ivrbot_operator import defaults as d
from ivrbot_operator.ports import PortPool


@dataclass(frozen=True)
class Images:
    """Images used when an IVRBot names none (chart values `images.*` set these)."""

    bot: str = d.BOT_IMAGE
    piper: str = d.PIPER_IMAGE
    vosk: str = d.VOSK_IMAGE
    llama: str = d.LLAMA_IMAGE


@dataclass(frozen=True)
class OperatorConfig:
    pool: PortPool = field(default_factory=lambda: PortPool(d.PORT_POOL_MIN, d.PORT_POOL_MAX))
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    reconcile_interval: float = 10.0
    opensips_mi_urls: tuple[str, ...] = ()  # every OpenSIPS of the dispatcher tier (an HA pair: two)
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    images: Images = field(default_factory=Images)
    reload_grace: float = 90.0  # how long OpenSIPS may list an old table before it is reported
    reload_backoff: float = 5.0
    reload_backoff_max: float = 60.0
    # Leader election over a coordination.k8s.io Lease; no namespace: no election (one replica only).
    lease_namespace: str | None = None
    lease_name: str = "ivrbot-operator"
    lease_duration: float = 15.0
    identity: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        """IVRBOT_OPERATOR_* variables; a malformed value raises ValueError naming the variable."""

        def number(key: str, default: float) -> float:
            raw = env.get(key, "")
            try:
                return float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{key}={raw!r} is not a number") from None

        pool = PortPool(int(number("IVRBOT_OPERATOR_PORT_MIN", d.PORT_POOL_MIN)),
                        int(number("IVRBOT_OPERATOR_PORT_MAX", d.PORT_POOL_MAX)))
        namespaces = tuple(n.strip() for n in env.get("IVRBOT_OPERATOR_NAMESPACES", "").split(",") if n.strip())
        return cls(
            pool=pool,
            namespaces=namespaces,
            reconcile_interval=number("IVRBOT_OPERATOR_RECONCILE_INTERVAL", 10.0),
            opensips_mi_urls=tuple(u for u in env.get("IVRBOT_OPERATOR_OPENSIPS_MI_URL", "").replace(",", " ").split()),
            lease_namespace=env.get("IVRBOT_OPERATOR_LEASE_NAMESPACE") or None,
            lease_name=env.get("IVRBOT_OPERATOR_LEASE_NAME") or "ivrbot-operator",
            lease_duration=number("IVRBOT_OPERATOR_LEASE_DURATION", 15.0),
            identity=env.get("POD_NAME", ""),
            liveness_endpoint=env.get("IVRBOT_OPERATOR_LIVENESS", "http://0.0.0.0:8080/healthz") or None,
            images=Images(
                bot=env.get("IVRBOT_OPERATOR_BOT_IMAGE") or d.BOT_IMAGE,
                piper=env.get("IVRBOT_OPERATOR_PIPER_IMAGE") or d.PIPER_IMAGE,
                vosk=env.get("IVRBOT_OPERATOR_VOSK_IMAGE") or d.VOSK_IMAGE,
                llama=env.get("IVRBOT_OPERATOR_LLAMA_IMAGE") or d.LLAMA_IMAGE,
            ),
        )
