"""The cluster-wide port allocator: disjointness, rebuild from status, exhaustion, release."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivrbot_operator.ports import PodPorts, PortAllocator, PortPool, block_size


def assert_disjoint(alloc: PortAllocator) -> None:
    """No port is held twice: blocks are pairwise disjoint; a fixed SIP port is shared only by
    the pods of its own IVRBot (which the pod anti-affinity keeps on different nodes)."""
    seen: set[int] = set()
    for owner in alloc.owners():
        fixed = alloc.fixed_sip(owner)
        mine: set[int] = {fixed} if fixed is not None else set()
        for pod in alloc.of(owner).values():
            block = set(range(pod.base, pod.end))
            assert not block & (seen | mine), f"overlap: {sorted(block & (seen | mine))[:5]}"
            mine |= block
        assert not mine & seen
        assert all(alloc.pool.contains(p) for p in mine)
        seen |= mine


def test_pod_block_layout_keeps_rtp_even_and_inside_block() -> None:
    alloc = PortAllocator(PortPool(20001, 20999))  # odd start: blocks still start even
    assert alloc.allocate(("ns", "a"), [0, 1], rtp_ports=16) is None
    p0, p1 = alloc.of(("ns", "a"))[0], alloc.of(("ns", "a"))[1]
    assert p0.base % 2 == 0 and p0.rtp_min % 2 == 0 and p0.rtp_max % 2 == 1
    assert len({p0.sip, p0.http, p0.vosk, p0.piper, p0.llama}) == 5
    assert p0.rtp_max - p0.rtp_min + 1 == 16
    assert p1.base >= p0.end


def test_disjoint_across_many_ivrbots_with_churn() -> None:
    rng = random.Random(7)
    alloc = PortAllocator(PortPool(20000, 29999))
    live: dict[tuple[str, str], int] = {}
    for _ in range(400):
        owner = ("ns", f"bot{rng.randrange(25)}")
        if owner in live and rng.random() < 0.3:
            alloc.release_owner(owner)
            del live[owner]
        else:
            replicas = rng.randrange(0, 6)
            rtp = live.get(owner, rng.choice([8, 16, 40, 100]))
            alloc.release(owner, [o for o in alloc.of(owner) if o >= replicas])
            alloc.allocate(owner, range(replicas), rtp)
            live[owner] = rtp
        assert_disjoint(alloc)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 5), st.sampled_from([2, 4, 16, 50])), max_size=40))
def test_disjoint_for_any_sequence(ops: list[tuple[int, int, int]]) -> None:
    alloc = PortAllocator(PortPool(20000, 20600))
    for bot, replicas, rtp in ops:
        owner = ("ns", f"b{bot}")
        rtp = next((p.rtp_ports for p in alloc.of(owner).values()), rtp)
        alloc.release(owner, [o for o in alloc.of(owner) if o >= replicas])
        shortage = alloc.allocate(owner, range(replicas), rtp)
        assert_disjoint(alloc)
        if shortage is None:
            assert set(alloc.of(owner)) == set(range(replicas))


def test_rebuild_from_status_gives_the_same_ports_and_no_overlap_after() -> None:
    pool = PortPool(20000, 20999)
    first = PortAllocator(pool)
    first.allocate(("a", "x"), range(3), 16)
    first.reserve_fixed_sip(("a", "y"), 20990)
    first.allocate(("a", "y"), range(2), 8)
    status = {owner: [{"ordinal": o, **p.to_status()} for o, p in first.of(owner).items()]
              for owner in first.owners()}

    rebuilt = PortAllocator(pool)
    for owner, entries in status.items():
        refused = rebuilt.restore(owner, {e["ordinal"]: PodPorts.from_status(e) for e in entries})
        assert refused == []
    for owner in first.owners():
        assert rebuilt.of(owner) == first.of(owner)
    assert rebuilt.fixed_sip(("a", "y")) == 20990
    assert rebuilt.free_count() == first.free_count()
    rebuilt.allocate(("b", "z"), range(5), 16)
    assert_disjoint(rebuilt)
    assert 20990 not in set().union(*(p.all_ports() for p in rebuilt.of(("b", "z")).values()))


def test_restore_refuses_overlapping_entries() -> None:
    alloc = PortAllocator(PortPool(20000, 20999))
    alloc.allocate(("a", "x"), [0], 16)
    clash = alloc.of(("a", "x"))[0]
    assert alloc.restore(("a", "other"), {0: clash}) == [0]
    assert alloc.of(("a", "other")) == {}


def test_malformed_status_entry_is_rejected() -> None:
    good = PodPorts(base=20000, rtp_ports=16).to_status()
    with pytest.raises(ValueError):
        PodPorts.from_status({**good, "voskPort": 1})


def test_exhaustion_reports_missing_ports_and_allocates_what_fits() -> None:
    alloc = PortAllocator(PortPool(20000, 20049))  # 50 ports, blocks of 22
    shortage = alloc.allocate(("ns", "a"), range(3), 16)
    assert shortage is not None
    assert set(alloc.of(("ns", "a"))) == {0, 1}
    assert (shortage.pods, shortage.ports_needed, shortage.ports_free, shortage.ports_missing) == (1, 22, 6, 16)
    assert "16 ports missing" in str(shortage)


def test_release_returns_ports_for_reuse() -> None:
    alloc = PortAllocator(PortPool(20000, 20043))  # exactly two blocks of 22
    assert alloc.allocate(("ns", "a"), range(2), 16) is None
    assert alloc.allocate(("ns", "b"), [0], 16) is not None
    freed = alloc.of(("ns", "a"))[1]
    alloc.release(("ns", "a"), [1])
    assert alloc.allocate(("ns", "b"), [0], 16) is None
    assert alloc.of(("ns", "b"))[0] == freed
    alloc.release_owner(("ns", "a"))
    alloc.release_owner(("ns", "b"))
    assert alloc.free_count() == 44 and alloc.owners() == set()


def test_fixed_sip_port_is_exclusive_cluster_wide() -> None:
    alloc = PortAllocator(PortPool(20000, 20999))
    assert alloc.reserve_fixed_sip(("ns", "a"), 20500)
    assert not alloc.reserve_fixed_sip(("ns", "b"), 20500)
    alloc.allocate(("ns", "a"), range(2), 16)
    assert {p.sip for p in alloc.of(("ns", "a")).values()} == {20500}
    alloc.allocate(("ns", "c"), range(40), 2)
    assert_disjoint(alloc)


def test_block_size_counts_single_ports_and_rtp() -> None:
    assert block_size(16) == 22
