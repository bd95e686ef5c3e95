import random
import socket

import pytest

from ivrbot.rtp.ports import PortPool, PortsExhausted


def pool(pairs: int) -> PortPool:
    base = random.randrange(30000, 60000, 2)
    return PortPool(base, base + 2 * pairs - 1, host="127.0.0.1")


def test_allocates_even_rtp_with_bound_rtcp_plus_one_until_exhausted() -> None:
    p = pool(3)
    leases = [p.allocate() for _ in range(3)]
    assert all(lease.rtp_port % 2 == 0 for lease in leases)
    assert [lease.rtcp_sock.getsockname()[1] for lease in leases] == [lease.rtp_port + 1 for lease in leases]
    assert len({lease.rtp_port for lease in leases}) == 3
    with pytest.raises(PortsExhausted):
        p.allocate()
    leases[1].release()
    leases[1].release()  # idempotent
    assert p.in_use == 2
    again = p.allocate()
    assert again.rtp_port == leases[1].rtp_port
    for lease in [*leases, again]:
        lease.release()
    assert p.in_use == 0


def test_skips_ports_another_process_holds() -> None:
    p = pool(2)
    first = p._ports[0]
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind(("127.0.0.1", first + 1))  # its RTCP port is taken
    except OSError:
        pytest.skip("port already taken by someone else")
    try:
        lease = p.allocate()
        assert lease.rtp_port != first
        lease.release()
    finally:
        blocker.close()


def test_released_socket_is_closed_and_port_rebindable() -> None:
    p = pool(1)
    lease = p.allocate()
    port = lease.rtp_port
    lease.release()
    assert lease.rtp_sock.fileno() == -1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.close()


def test_odd_or_tiny_ranges() -> None:
    with pytest.raises(ValueError):
        PortPool(10001, 10001)
    assert PortPool(10001, 10004).capacity == 1  # 10002/10003 only: 10004 would need 10005
    assert PortPool(10001, 10005).capacity == 2
