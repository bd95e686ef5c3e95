"""The address a bot advertises in SDP and Contact when the configuration names none."""

from __future__ import annotations

import contextlib
import ipaddress

import psutil


def default_advertised_address() -> str:
    """The host's first non-loopback IPv4 address: what a proxy on another host can reach."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET":
                with contextlib.suppress(ValueError):
                    if not ipaddress.ip_address(a.address).is_loopback:
                        return str(a.address)
    return "127.0.0.1"
