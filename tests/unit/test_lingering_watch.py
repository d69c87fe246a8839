"""A start refused only for watchers holding no lock on a live member looks again until
Ceph's watch timeout (safety.ImageView.lingering, facts.LINGER_RETRY_CAP_S).

Why (docs/reliability.md, seed 1205, faults 14 and 26): a migration's target QEMU,
destroyed by its node's stop after the source died, keeps its watch until the OSDs time it
out (30 s); every start of the VM elsewhere refused it as a live member's writer, three
refusals banned the VM everywhere, and it needed an operator. Written from the rule, not
the code: a lockless watcher of a live member is waited for and never recovered; a live
one is still refused; every other refusal is as fast as before.
"""

import threading
import time

import pytest

from test_agent_flows import NODE1, NODE2, World   # noqa: F401 - the same fake world
from vmceph import facts as facts_mod
from vmceph.safety import (GONE, LEFT, LOCAL, MEMBER, UNCLEAN, UNKNOWN, Facts, ImageFacts,
                           Locker, Owner, Watcher, classify_image)


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def _later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()
    return t


def test_a_lockless_watch_of_a_member_that_lapses_lets_the_start_go_on(w, monkeypatch):
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 10.0)
    dead = w.holder("rbd/vm1-root", NODE2, lock=False)    # e.g. an incoming QEMU, destroyed
    w.ceph.kill_client(dead.addr)                         # silent; its watch lingers
    _later(1.5, lambda: w.ceph.expire_watches(dead.addr))  # the OSDs time its watch out
    t0 = time.monotonic()
    assert w.start() == 0, w.err
    assert 1.0 < time.monotonic() - t0 < 9.0
    assert w.node1.running("vm1")
    # nothing was recovered: a watch that lapsed needs no blocklist and holds no lock
    assert w.ceph.blocklist == {} and w.ceph.image("rbd/vm1-root").lock_breaks == []
    log = w.logfile.read_text()
    assert "holds no lock; looking again" in log
    assert log.count("holds no lock; looking again") == 1     # said once, not every second


def test_a_lockless_watch_of_a_member_that_stays_is_refused_and_says_how_long(w, monkeypatch):
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 2.0)
    silent = w.holder("rbd/vm1-root", NODE2, lock=False)
    w.ceph.kill_client(silent.addr)      # answers nothing (dead, or cut off: the same here)
    assert w.start() == 1, w.err
    assert "live cluster member" in w.reason and "node2" in w.reason
    assert "still, after looking again for" in w.reason
    assert w.ceph.blocklist == {} and not w.node1.called("createXML")


def test_a_lockless_watcher_that_answers_a_notification_is_refused_at_once(w, monkeypatch):
    """alive for certain (a dead client's watch acknowledges nothing): no wait, no
    recovery; the race of two starts, one paused QEMU seeing the other's, is this case"""
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 30.0)
    w.holder("rbd/vm1-root", NODE2, lock=False)
    t0 = time.monotonic()
    assert w.start() == 1, w.err
    assert time.monotonic() - t0 < 5.0
    assert "live cluster member" in w.reason and "looking again" not in w.reason
    assert ("ceph", "notify", "rbd/vm1-root") in w.timeline
    assert "acknowledged a notification: live clients; refusing without waiting" in \
        w.logfile.read_text()
    assert w.ceph.blocklist == {} and not w.node1.called("createXML")


def test_a_member_holding_the_lock_is_refused_without_waiting(w, monkeypatch):
    """a running writer elsewhere (lock and watch) is no lingering watch: refused at once"""
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 30.0)
    held = w.holder("rbd/vm1-root", NODE2, lock=True)
    w.ceph.kill_client(held.addr)          # even silent: a lock holder is not waited for
    t0 = time.monotonic()
    assert w.start() == 1, w.err
    assert time.monotonic() - t0 < 5.0
    assert "live cluster member" in w.reason and "looking again" not in w.reason


def test_an_unclean_nodes_lockless_watch_is_refused_without_waiting(w, monkeypatch):
    """a node lost and not yet fenced is Pacemaker's to fence first: no wait"""
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 30.0)
    lost = w.holder("rbd/vm1-root", NODE2, lock=False)
    w.ceph.kill_client(lost.addr)
    t0 = time.monotonic()
    assert w.start(membership="node1=member node2=unclean") == 1
    assert time.monotonic() - t0 < 5.0
    assert "not yet fenced" in w.reason


# ------------------------------------------------------------- the property, as a table
A = "10.0.0.2:0/77"


def _view(state, lock=False, watch=True, foreign=False):
    img = ImageFacts(
        spec="rbd/x", exists=True,
        watchers=(Watcher(A, 7, 11),) if watch else (),
        lockers=(Locker("client.7", "auto 11" if not foreign else "mine", A),) if lock
        else (),
        lock_tag=("internal" if not foreign else "backup") if lock else None)
    f = Facts(quorum_ok=True, quorum_detail="quorum a", images=(img,), local_node="node1",
              domain_active_here=False, owners={"10.0.0.2": Owner("node2", state)},
              membership_known=True)
    return classify_image(f, img)


@pytest.mark.parametrize("state,lock,watch,foreign,expected", [
    (MEMBER, False, True, False, True),      # the lingering watch: wait
    (MEMBER, True, True, False, False),      # a running writer: refuse now
    (MEMBER, True, False, False, False),     # watchless holder: its own retry, not this
    (UNCLEAN, False, True, False, False),    # to be fenced first
    (UNKNOWN, False, True, False, False),    # nobody vouches for the address
    (MEMBER, True, True, True, False),       # a lock that is not librbd's
    (GONE, False, True, False, False),       # fenced: recovered, not waited for
    (LEFT, False, True, False, False),
])
def test_which_refusals_are_waited_for(state, lock, watch, foreign, expected):
    assert _view(state, lock, watch, foreign).lingering is expected


# --------------------------------------------- this node's own lockless watcher (seed 1207)
# docs/reliability.md, seed 1207, fault 39: the source of vm3's migration died with its
# node; node3's stop destroyed the incoming QEMU (paused, lockless, its client recorded by
# nothing: no migrate_from had run); node3's start 4 s later refused its lingering watch
# as "open read-write on this node by a client that is not this domain", and vm3 ran
# nowhere until an operator cleaned up. A lockless local watcher while the domain does not
# run here is waited for exactly like a member's.

def test_a_lockless_local_watch_that_lapses_lets_the_start_go_on(w, monkeypatch):
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 10.0)
    dead = w.holder("rbd/vm1-root", NODE1, lock=False)   # the destroyed incoming QEMU
    w.ceph.kill_client(dead.addr)
    _later(1.5, lambda: w.ceph.expire_watches(dead.addr))
    t0 = time.monotonic()
    assert w.start() == 0, w.err
    assert 1.0 < time.monotonic() - t0 < 9.0
    assert w.node1.running("vm1")
    assert w.ceph.blocklist == {} and w.ceph.image("rbd/vm1-root").lock_breaks == []
    assert "of this node while the domain does not run here) that holds no lock; looking " \
        "again" in w.logfile.read_text()


def test_a_lockless_local_watch_that_stays_is_refused_and_says_how_long(w, monkeypatch):
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 2.0)
    silent = w.holder("rbd/vm1-root", NODE1, lock=False)
    w.ceph.kill_client(silent.addr)
    assert w.start() == 1, w.err
    assert "open read-write on this node" in w.reason and "not this domain" in w.reason
    assert "still, after looking again for" in w.reason
    assert w.ceph.blocklist == {} and not w.node1.called("createXML")


def test_a_live_lockless_local_watcher_is_refused_at_once(w, monkeypatch):
    """e.g. 'rbd bench' or a stray qemu-img: it acknowledges the notification"""
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 30.0)
    w.holder("rbd/vm1-root", NODE1, lock=False)
    t0 = time.monotonic()
    assert w.start() == 1, w.err
    assert time.monotonic() - t0 < 5.0
    assert "not this domain" in w.reason and "looking again" not in w.reason
    assert ("ceph", "notify", "rbd/vm1-root") in w.timeline
    assert w.ceph.blocklist == {} and not w.node1.called("createXML")


def test_a_silent_local_lock_holder_is_refused_without_waiting(w, monkeypatch):
    """a local client holding the lock, recorded by nothing: not a lingering watch"""
    monkeypatch.setattr(facts_mod, "LINGER_RETRY_CAP_S", 30.0)
    held = w.holder("rbd/vm1-root", NODE1, lock=True)
    w.ceph.kill_client(held.addr)
    t0 = time.monotonic()
    assert w.start() == 1, w.err
    assert time.monotonic() - t0 < 5.0
    assert "not this domain" in w.reason and "looking again" not in w.reason


def _local_view(lock, active, member_too=None):
    here = "10.0.0.1:0/5"
    watchers = [Watcher(here, 5, 15)]
    lockers = [Locker("client.5", "auto 15", here)] if lock else []
    owners = {"10.0.0.1": Owner("node1", LOCAL)}
    if member_too is not None:      # plus a member's watcher, with or without the lock
        watchers.append(Watcher(A, 7, 11))
        if member_too:
            lockers.append(Locker("client.7", "auto 11", A))
        owners["10.0.0.2"] = Owner("node2", MEMBER)
    img = ImageFacts(spec="rbd/x", exists=True, watchers=tuple(watchers),
                     lockers=tuple(lockers), lock_tag="internal" if lockers else None)
    f = Facts(quorum_ok=True, quorum_detail="quorum a", images=(img,), local_node="node1",
              domain_active_here=active, owners=owners, membership_known=True)
    return classify_image(f, img).may_be_lingering(active)


@pytest.mark.parametrize("lock,active,member_too,expected", [
    (False, False, None, True),    # the destroyed incoming QEMU: wait
    (True, False, None, False),    # a local lock holder: refuse now (or deadclients)
    (False, True, None, False),    # the domain runs here: its own QEMU, nothing to wait
    (False, False, False, True),   # with a lockless member's watcher too: wait for both
    (False, False, True, False),   # a member holds the lock: a running writer, refuse now
])
def test_which_local_watchers_are_waited_for(lock, active, member_too, expected):
    assert _local_view(lock, active, member_too) is expected
