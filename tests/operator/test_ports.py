"""The cluster-wide port allocator: disjointness, rebuild from status, exhaustion, release."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ivrbot_operator import defaults as d
from ivrbot_operator.ports import PodPorts, PortAllocator, PortPool, block_size, fits, rebuild
from ivrbot_operator.rollout import PodState, plan


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


def test_taken_sip_port_names_the_true_holder_and_keeps_the_current_one() -> None:
    alloc = PortAllocator(PortPool(20000, 20999))
    alloc.allocate(("ns", "alpha"), range(2), 16)  # 20000-20043
    alloc.allocate(("ns", "beta"), range(1), 16)  # 20044-20065
    assert alloc.reserve_fixed_sip(("ns", "alpha"), 20500)
    other = alloc.sip_conflict(("ns", "alpha"), 20050)
    assert other is not None and "IVRBot ns/beta" in other and "beta-0" in other
    own = alloc.sip_conflict(("ns", "alpha"), 20030)
    assert own is not None and "own pod alpha-1" in own and "beta" not in own
    # A refused change leaves the IVRBot's current SIP port reserved.
    assert not alloc.reserve_fixed_sip(("ns", "alpha"), 20050)
    assert alloc.fixed_sip(("ns", "alpha")) == 20500
    assert alloc.sip_conflict(("ns", "beta"), 20500) is not None


def test_replacement_block_is_reserved_before_the_old_pod_may_go() -> None:
    alloc = PortAllocator(PortPool(20000, 20069))  # 70 ports: two blocks of 22, 26 spare
    owner = ("ns", "alpha")
    assert alloc.sync(owner, 2, 16, live=[]) is None
    old = alloc.of(owner)
    # portsPerPod 16 -> 18: one replacement (24 ports) fits, for the highest ordinal first.
    assert alloc.sync(owner, 2, 18, live=[0, 1]) is None
    assert alloc.of(owner) == old and set(alloc.replacements(owner)) == {1}
    new1 = alloc.replacements(owner)[1]
    assert new1.rtp_ports == 18 and not new1.all_ports() & (old[0].all_ports() | old[1].all_ports())
    # alpha-1 gone: the replacement becomes current; alpha-0's cannot be placed yet, so it stays.
    shortage = alloc.sync(owner, 2, 18, live=[0])
    assert alloc.of(owner)[1] == new1 and alloc.of(owner)[0] == old[0]
    assert shortage is not None and alloc.replacements(owner) == {}
    assert_disjoint(alloc)
    # In a pool with no room at all, nothing is reserved and the shortage is reported.
    tight = PortAllocator(PortPool(20000, 20049))
    tight.sync(owner, 2, 16, live=[])
    assert tight.sync(owner, 2, 18, live=[0, 1]) is not None and tight.replacements(owner) == {}


def test_rebuild_takes_live_pod_blocks_over_missing_or_stale_status() -> None:
    pool = PortPool(20000, 20999)
    first = PortAllocator(pool)
    first.allocate(("ns", "alpha"), range(2), 16)
    live = {("ns", "alpha"): first.of(("ns", "alpha"))}
    # The crash came before status was written: status knows nothing of alpha.
    rebuilt, refused = rebuild(pool, live, {})
    assert rebuilt.of(("ns", "alpha")) == first.of(("ns", "alpha")) and refused == {}
    rebuilt.allocate(("ns", "beta"), range(3), 16)
    assert_disjoint(rebuilt)
    # A status entry that overlaps a live pod of another IVRBot is refused, the pod kept.
    clash = {("ns", "gamma"): {0: first.of(("ns", "alpha"))[1]}}
    again, refused = rebuild(pool, live, clash)
    assert refused == {("ns", "gamma"): [0]} and again.of(("ns", "alpha")) == first.of(("ns", "alpha"))


OWNERS = [("ns", "a"), ("ns", "b"), ("ns", "c")]


class Cluster(RuleBasedStateMachine):
    """The allocator as the operator drives it, with the cluster around it: pods that carry their
    block, status written only sometimes (a crash in between), pods that take time to go, and
    operator restarts that rebuild from pods and status. Invariant: no two pods share a port
    (a fixed SIP port is shared only by one IVRBot's pods, kept on different nodes)."""

    pool = PortPool(20000, 20199)

    def __init__(self) -> None:
        super().__init__()
        self.alloc = PortAllocator(self.pool)
        self.pods: dict[tuple[tuple[str, str], int], tuple[PodPorts, bool]] = {}  # -> (ports, terminating)
        self.status: dict[tuple[str, str], dict[int, PodPorts]] = {}
        self.specs: dict[tuple[str, str], tuple[int, int, int | None]] = {}

    @rule(owner=st.sampled_from(OWNERS), replicas=st.integers(0, 4), rtp=st.sampled_from([2, 4, 16, 30]),
          sip=st.one_of(st.none(), st.integers(20000, 20199)))
    def set_spec(self, owner: tuple[str, str], replicas: int, rtp: int, sip: int | None) -> None:
        self.specs[owner] = (replicas, rtp, sip)

    @rule(owner=st.sampled_from(OWNERS), write_status=st.booleans())
    def reconcile(self, owner: tuple[str, str], write_status: bool) -> None:
        if owner not in self.specs:
            return
        replicas, rtp, sip = self.specs[owner]
        if not self.alloc.reserve_fixed_sip(owner, sip):
            return  # a taken SIP port: the pods stay as they are
        observed = {o: PodState(name=f"{owner[1]}-{o}", ordinal=o, spec_hash=self._hash(ports), ready=True,
                                terminating=term)
                    for (who, o), (ports, term) in self.pods.items() if who == owner}
        self.alloc.sync(owner, replicas, rtp, observed)
        held, nxt = self.alloc.of(owner), self.alloc.replacements(owner)
        desired = {o: {"metadata": {"name": f"{owner[1]}-{o}", "ports": nxt.get(o, p),
                                    "annotations": {d.ANNOTATION_SPEC_HASH: self._hash(nxt.get(o, p))}}}
                   for o, p in held.items() if o < replicas and fits(nxt.get(o, p), rtp, sip)}
        todo = plan(replicas, desired, observed)
        for name in todo.delete:
            o = int(name.rsplit("-", 1)[1])
            self.pods[(owner, o)] = (self.pods[(owner, o)][0], True)
        for manifest in todo.create:
            o = int(manifest["metadata"]["name"].rsplit("-", 1)[1])
            self.pods[(owner, o)] = (manifest["metadata"]["ports"], False)
        if write_status:
            self.status[owner] = self.alloc.of(owner)

    @staticmethod
    def _hash(ports: PodPorts) -> str:
        return f"{ports.base}/{ports.rtp_ports}/{ports.fixed_sip}"

    @rule(data=st.data())
    def pod_gone(self, data: st.DataObject) -> None:
        going = sorted(k for k, (_, term) in self.pods.items() if term)
        if going:
            del self.pods[data.draw(st.sampled_from(going))]

    @rule(owner=st.sampled_from(OWNERS))
    def delete_ivrbot(self, owner: tuple[str, str]) -> None:
        """The finalizer: pods deleted; ports released only once the last pod is gone."""
        self.specs.pop(owner, None)
        mine = [k for k in self.pods if k[0] == owner]
        for k in mine:
            self.pods[k] = (self.pods[k][0], True)
        if not mine:
            self.alloc.release_owner(owner)
            self.status.pop(owner, None)

    @rule()
    def restart(self) -> None:
        live: dict[tuple[str, str], dict[int, PodPorts]] = {}
        for (owner, o), (ports, _) in self.pods.items():
            live.setdefault(owner, {})[o] = ports
        self.alloc, _ = rebuild(self.pool, live, self.status)

    @invariant()
    def no_two_pods_share_a_port(self) -> None:
        seen: dict[int, tuple[str, str]] = {}
        for (owner, _), (ports, _) in self.pods.items():
            for port in ports.all_ports():
                holder = seen.setdefault(port, owner)
                assert holder == owner, f"port {port} held by {holder} and {owner}"
        by_owner: dict[tuple[str, str], list[set[int]]] = {}
        for (owner, _), (ports, _) in self.pods.items():
            by_owner.setdefault(owner, []).append(set(range(ports.base, ports.end)))
        for blocks in by_owner.values():
            for i, a in enumerate(blocks):
                for b in blocks[i + 1:]:
                    assert not a & b


Cluster.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_no_two_pods_share_a_port = Cluster.TestCase
