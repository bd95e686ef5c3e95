"""Per-call RTP/RTCP port pairs from the pod's configured range.

A port is handed out only after both sockets are actually bound (another process may hold it),
and the bound sockets go to the caller inside the lease, so nothing can take the port in between.
Allocation rotates through the range so a just-freed port is not reused at once (late packets of
the old call would land in the new one).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


class PortsExhausted(RuntimeError):
    """No bindable even/odd pair is free in the range."""


@dataclass(eq=False)
class PortLease:
    """An RTP port (even) and its RTCP port (+1), bound; ``release()`` is idempotent."""

    pool: PortPool
    rtp_port: int
    rtp_sock: socket.socket
    rtcp_sock: socket.socket
    released: bool = field(default=False)

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.rtp_sock.close()
        self.rtcp_sock.close()
        self.pool._free(self.rtp_port)


class PortPool:
    """Even ports in ``[min_port, max_port]`` (inclusive) whose +1 is also in range."""

    def __init__(self, min_port: int, max_port: int, host: str = "0.0.0.0") -> None:
        first = min_port + (min_port % 2)
        if not 0 < min_port <= max_port < 65536 or first + 1 > max_port:
            raise ValueError(f"RTP port range {min_port}-{max_port} holds no even/odd pair")
        self.host = host
        self._ports = list(range(first, max_port, 2))
        self._in_use: set[int] = set()
        self._cursor = 0

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> PortLease:
        for _ in range(len(self._ports)):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._ports)
            if port in self._in_use:
                continue
            socks = _bind_pair(self.host, port)
            if socks is None:
                continue
            self._in_use.add(port)
            return PortLease(self, port, socks[0], socks[1])
        raise PortsExhausted(f"no free RTP port pair in {self._ports[0]}-{self._ports[-1] + 1}")

    def _free(self, port: int) -> None:
        self._in_use.discard(port)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket] | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bound: list[socket.socket] = []
    try:
        for p in (port, port + 1):
            s = socket.socket(family, socket.SOCK_DGRAM)
            bound.append(s)
            s.bind((host, p))
            s.setblocking(False)
    except OSError:
        for s in bound:
            s.close()
        return None
    return bound[0], bound[1]
