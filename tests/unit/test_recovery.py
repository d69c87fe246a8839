"""Recovery (facts.recover) against the stateful fake Ceph, which models OSD map epochs.

The fake gives every blocklist change a new OSD map epoch; each OSD gets it only after its
own propagation delay, or when an operation carrying a newer epoch reaches it (an OSD
handles an op only once it has the op's map). A session keeps the map it connected with
until ``wait_for_latest_osdmap()``. A lock break handled by an OSD that does not yet know
the holder is blocklisted is recorded in ``unsafe_breaks``: the old holder could still
write there. So a recovery without the wait fails these tests.

Also: the abandoned call of a bounded librados/librbd call never sees its handles freed
(``use_after_free``), issue 9 item 6.
"""

import logging
import threading
import time
import types

import pytest

import fakes
from vmceph import facts
from vmceph.ceph import CephSession
from vmceph.ocf import Deadline, GenericError
from vmceph.safety import Recovery

SPEC, SPEC2 = "rbd/vm1", "rbd/vm1-data"


@pytest.fixture
def ceph():
    c = fakes.FakeCeph()
    c.add_image(SPEC)
    c.add_image(SPEC2)
    yield c
    c.close()


def session(ceph, deadline=20):
    s = CephSession("", "vmceph", None, Deadline(deadline), logging.getLogger("t"),
                    rados_mod=ceph.rados, rbd_mod=ceph.rbd)
    s.connect()
    return s


def ctx(expire=600):
    return types.SimpleNamespace(params=types.SimpleNamespace(blocklist_expire=expire),
                                 log=logging.getLogger("test-recovery"), deadline=Deadline(20))


def rec(spec, client, lock=True, node="node2"):
    cookie = None
    if lock:
        cookie = [lk[1] for lk in fakes.FakeCeph.image(ceph_of[0], spec).lockers
                  if lk[2] == client.addr][0]
    return Recovery(spec, client.addr, client.entity, node, "fenced", cookie)


ceph_of = [None]


@pytest.fixture(autouse=True)
def _remember(ceph):
    ceph_of[0] = ceph


def test_blocklist_then_wait_then_break(ceph):
    old = ceph.qemu_writes(SPEC, "10.252.0.2")
    s = session(ceph)
    facts.recover(ctx(), s, [rec(SPEC, old)])
    events = [e[1] for e in ceph.timeline if e[0] == "ceph"]
    assert events == ["blocklist add", "wait_for_latest_osdmap", "lock_break"]
    assert ceph.unsafe_breaks == []
    assert ceph.image(SPEC).lock_breaks == [(0, old.addr)]


def test_without_the_wait_the_lock_is_broken_on_an_osd_that_still_accepts_the_holder(
        ceph, monkeypatch):
    """The rule removed on purpose: the fake sees the break on an old map."""
    old = ceph.qemu_writes(SPEC, "10.252.0.2")
    s = session(ceph)
    monkeypatch.setattr(CephSession, "wait_for_latest_osdmap", lambda self: 0.0)
    facts.recover(ctx(), s, [rec(SPEC, old)])
    assert ceph.unsafe_breaks and ceph.unsafe_breaks[0][:2] == (SPEC, old.addr)


def test_the_wait_is_logged_with_its_duration(ceph, caplog):
    old = ceph.qemu_writes(SPEC, "10.252.0.2")
    with caplog.at_level(logging.WARNING):
        facts.recover(ctx(), session(ceph), [rec(SPEC, old)])
    assert any("waited" in r.getMessage() and "for the OSD map carrying the blocklist" in
               r.getMessage() for r in caplog.records)


def test_an_old_client_write_is_refused_once_the_osds_have_the_map(ceph):
    """The model itself: before propagation an OSD accepts the blocklisted client's write;
    an op carrying the new epoch (what the new QEMU sends) makes the OSD refuse it."""
    old = ceph.qemu_writes(SPEC, "10.252.0.2")
    s = session(ceph)
    facts.recover(ctx(), s, [rec(SPEC, old)])
    epoch = ceph.osdmap_epoch
    assert ceph.client_write(old, SPEC, "header") is False   # the break's OSD has it
    new_qemu_epoch = epoch                                   # a fresh client: newest map
    ceph.osd_op(new_qemu_epoch, SPEC, "data.7")
    assert ceph.client_write(old, SPEC, "data.7") is False


def test_the_wait_timing_out_breaks_no_lock(ceph, monkeypatch):
    old = ceph.qemu_writes(SPEC, "10.252.0.2")
    s = session(ceph)
    release = threading.Event()

    def hang():
        release.wait(10)
    monkeypatch.setattr(s.cluster, "wait_for_latest_osdmap", hang)
    monkeypatch.setattr(CephSession, "MON_OP_CAP", 0.3)
    with pytest.raises(GenericError, match="newest OSD map"):
        facts.recover(ctx(), s, [rec(SPEC, old)])
    release.set()
    assert ceph.image(SPEC).lock_breaks == [] and ceph.is_blocklisted(old.addr)


def test_one_blocklist_entry_per_address_one_break_per_image_address_cookie(ceph):
    old = ceph.qemu_writes(SPEC, "10.252.0.2")
    # the same client instance holds the lock of a second image
    st2 = ceph.image(SPEC2)
    st2.lockers = [(old.entity, "auto 77", old.addr)]
    s = session(ceph)
    r1 = rec(SPEC, old)
    r2 = Recovery(SPEC2, old.addr, old.entity, "node2", "fenced", "auto 77")
    watcher_only = Recovery(SPEC, old.addr, old.entity, "node2", "fenced", None)
    facts.recover(ctx(), s, [r1, watcher_only, r2, r1])
    adds = [c for c in ceph.commands if c.get("blocklistop") == "add"]
    assert [c["addr"] for c in adds] == [old.addr]
    assert ceph.image(SPEC).lock_breaks == [(0, old.addr)]
    assert ceph.image(SPEC2).lock_breaks == [(0, old.addr)]


def test_independent_entries_go_to_the_monitors_concurrently(ceph):
    a = ceph.qemu_writes(SPEC, "10.252.0.2")
    b = ceph.qemu_writes(SPEC2, "10.252.0.3")
    s = session(ceph)
    inflight, peak = [0], [0]
    lock = threading.Lock()
    real = s.blocklist_add

    def slow_add(addr, expire):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.2)
        real(addr, expire)
        with lock:
            inflight[0] -= 1
    s.blocklist_add = slow_add
    facts.recover(ctx(), s, [rec(SPEC, a), rec(SPEC2, b, node="node3")])
    assert peak[0] == 2


@pytest.mark.parametrize("addr", ["10.252.0.2:0/0", "10.252.0.2", "10.252.0.2:0/"])
def test_never_a_host_wide_entry(ceph, addr):
    s = session(ceph)
    with pytest.raises(GenericError, match="not the address of one client"):
        facts.recover(ctx(), s, [Recovery(SPEC, addr, "client.1", "node2", "x", None)])
    with pytest.raises(ValueError):
        s.blocklist_add(addr, 600)
    assert ceph.blocklist == {}


# ------------------------------------------------------------------ use after free

def test_an_abandoned_inspection_never_sees_its_handles_freed(ceph, monkeypatch):
    monkeypatch.setattr(CephSession, "OSD_OP_CAP", 0.2)
    s = session(ceph)
    rados_handle = s.cluster
    ceph.hang_osd.set()
    t0 = time.monotonic()
    got = s.inspect(SPEC)
    assert got.error and "did not answer" in got.error
    assert time.monotonic() - t0 < 5
    s.close()                              # the agent finishes its action meanwhile
    assert rados_handle.state == "connected", "shut down under an abandoned call"
    ceph.hang_osd.clear()
    ceph.release.set()                     # the OSD answers at last: the call resumes
    for t in threading.enumerate():
        if t.name.startswith("bounded:inspect"):
            t.join(5)
    assert ceph.use_after_free == []


def test_the_old_way_is_caught_by_the_fake(ceph, monkeypatch):
    """The rule removed on purpose: shutting the handle down under the abandoned call is
    what use_after_free records."""
    monkeypatch.setattr(CephSession, "OSD_OP_CAP", 0.2)
    s = session(ceph)
    ceph.hang_osd.set()
    s.inspect(SPEC)
    s.abandoned.clear()                    # pretend nothing was abandoned: close frees it
    s.close()
    ceph.hang_osd.clear()
    ceph.release.set()
    for t in threading.enumerate():
        if t.name.startswith("bounded:inspect"):
            t.join(5)
    assert ceph.use_after_free


def test_a_session_without_abandoned_calls_is_shut_down(ceph):
    s = session(ceph)
    handle = s.cluster
    assert not s.inspect(SPEC).error
    s.close()
    assert handle.state == "shutdown"
