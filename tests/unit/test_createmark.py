"""A start that dies while libvirt creates its domain (vmceph.createmark): the stop that
Pacemaker runs next must not say "stopped" while libvirt is still making a paused QEMU that
holds the VM's images (the 200-fault soak, seed 1203, fault 21: the VM refused on every
node until an operator came), and must destroy a never-resumed domain at once.

The oracle is the rule itself: after a successful stop, no domain of the resource runs on
the node and none appears later, and its images have no watcher of this node."""

import os
import subprocess
import threading
import time

import pytest

import fakes
from test_agent_flows import GUARDED, World
from vmceph import createmark, deadclients, ocf

VIR = fakes.VIR


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(createmark, "APPEAR_GRACE_S", 0.5)
    monkeypatch.setattr(createmark, "POLL_S", 0.02)


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def leave_orphan_mark(w):
    """What a start SIGKILLed during its create leaves: its mark (its first look saw no
    watcher on the VM's images), its process gone."""
    d = w.tmp / "rsctmp"
    d.mkdir(exist_ok=True)
    before = {spec: frozenset(x["addr"] for x in w.ceph.image(spec).watchers)
              for spec in GUARDED}
    (d / createmark.state_name("vm1")).write_text(createmark.encode(dead_pid(), 4242, before))


def mark_path(w):
    return w.tmp / "rsctmp" / createmark.state_name("vm1")


def finish_create_in_libvirt(w, delay):
    """libvirtd finishing a createXML whose caller is gone: listed shut off at once, paused
    ``delay`` s later."""
    w.node1.create_delay = delay
    conn = w.node1.module.open("qemu:///system")
    xml = w.config.read_text()
    t = threading.Thread(target=lambda: conn.createXML(xml, VIR.VIR_DOMAIN_START_PAUSED),
                         daemon=True)
    t.start()
    end = time.monotonic() + 5
    while w.node1.guest("vm1") is None:
        assert time.monotonic() < end
        time.sleep(0.01)
    return t


def logged(w):
    return w.logfile.read_text() if w.logfile.exists() else ""


def no_writer_left(w):
    return all(not w.ceph.image(spec).watchers for spec in GUARDED)


# ----------------------------------------------------------------------- the agent flows
def test_stop_waits_for_a_create_a_dead_start_left_running_and_destroys_it(w, quick):
    assert w.start() == 0 and w.run("stop") == 0      # the agent knows the domain
    leave_orphan_mark(w)
    t = finish_create_in_libvirt(w, 0.4)
    assert w.node1.guest("vm1").state == VIR.VIR_DOMAIN_SHUTOFF   # being created
    assert w.run("stop") == 0, w.err
    t.join(5)
    time.sleep(0.1)
    assert not w.node1.running("vm1"), "a paused QEMU appeared after the stop said stopped"
    assert no_writer_left(w)
    assert "died between creating the domain and resuming it" in logged(w)
    assert not mark_path(w).exists()


def test_a_never_resumed_domain_is_destroyed_at_once_not_asked_to_shut_down(w, quick):
    assert w.start() == 0 and w.run("stop") == 0
    leave_orphan_mark(w)
    finish_create_in_libvirt(w, 0.0).join(5)
    w.node1.guest("vm1").acpi = "ignore"               # a paused guest answers nothing
    t0, before = time.monotonic(), len(w.node1.calls)
    assert w.run("stop", meta={"timeout": "30000"}) == 0, w.err
    assert time.monotonic() - t0 < 5.0
    assert not [c for c in w.node1.calls[before:] if c[0] == "shutdownFlags"]
    assert not w.node1.running("vm1") and no_writer_left(w)
    assert "never resumed" in logged(w)


def test_stop_waits_a_bounded_grace_for_a_create_that_never_shows(w, quick):
    assert w.start() == 0 and w.run("stop") == 0
    leave_orphan_mark(w)
    t0 = time.monotonic()
    assert w.run("stop") == 0, w.err
    assert 0.4 < time.monotonic() - t0 < 3.0
    assert "no domain appeared" in logged(w) and not mark_path(w).exists()


def test_a_create_still_running_at_the_stops_limit_fails_the_stop(w, quick, monkeypatch):
    """Not "stopped" on a guess: Pacemaker then fences the node, which is right for a node
    whose libvirt cannot say within half a stop whether a QEMU will run."""
    assert w.start() == 0 and w.run("stop") == 0
    monkeypatch.setattr(createmark, "SETTLE_CAP_S", 0.5)
    leave_orphan_mark(w)
    finish_create_in_libvirt(w, 3.0)
    assert w.run("stop") == ocf.OCF_ERR_GENERIC
    assert "still creating" in w.reason


def test_a_mark_of_a_start_that_still_runs_changes_nothing(w, quick):
    assert w.start() == 0 and w.run("stop") == 0
    d = w.tmp / "rsctmp"
    (d / createmark.state_name("vm1")).write_text(
        createmark.encode(os.getpid(), deadclients.process_start_time(os.getpid())))
    t0 = time.monotonic()
    assert w.run("stop") == 0
    assert time.monotonic() - t0 < 0.4 and "died between" not in logged(w)


def test_starts_leave_no_mark_when_they_finish(w):
    assert w.start() == 0
    assert not mark_path(w).exists()                   # resumed
    assert w.run("stop") == 0
    w.node1.on_create = lambda g: None                 # its QEMU shows as no writer
    assert w.start() == ocf.OCF_ERR_GENERIC
    assert not mark_path(w).exists()                   # destroyed what it created


def test_a_start_that_gave_up_on_libvirt_keeps_the_mark_for_the_stop(w):
    w.node1.create_delay = 3.0
    assert w.run("start", meta={"timeout": "7000"}) == ocf.OCF_ERR_GENERIC
    assert mark_path(w).exists()


def test_the_mark_is_written_before_libvirt_is_asked(w, monkeypatch):
    seen = []
    real = w.node1.on_create
    w.node1.on_create = lambda g: (seen.append(mark_path(w).exists()), real(g))
    assert w.start() == 0
    assert seen == [True]


# ----------------------------------------------------------------------- the pure parts
class Clock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sleep(self, s):
        self.t += s


def scripted(answers):
    it = iter(answers)
    last = [None]

    def look():
        last[0] = next(it, last[0])
        return last[0]
    return look


@pytest.mark.parametrize("answers, budget, expect", [
    ([createmark.SETTLED], 10, createmark.SETTLED),
    ([createmark.ABSENT] * 3 + [createmark.STARTING] * 5 + [createmark.SETTLED], 10,
     createmark.SETTLED),
    ([createmark.ABSENT], 10, createmark.ABSENT),          # gives up after the grace
    ([createmark.STARTING], 10, createmark.STARTING),      # gives up at the budget
    ([createmark.STARTING], 1, createmark.STARTING),
    ([createmark.ABSENT], 1, createmark.ABSENT),           # the budget caps the grace
])
def test_settle(answers, budget, expect):
    c = Clock()
    seen, waited = createmark.settle(scripted(answers), budget, c.now, c.sleep)
    assert seen == expect
    if expect == createmark.ABSENT:
        assert waited <= min(createmark.APPEAR_GRACE_S, budget)
    if expect == createmark.STARTING:
        assert budget - 2 * createmark.POLL_S < waited <= budget
    assert waited <= budget


def test_round_trip_and_garbage():
    before = {"rbd/a": frozenset({"10.0.0.1:0/5", "10.0.0.2:0/6"}), "rbd/b": frozenset()}
    assert createmark.decode(createmark.encode(123, 456, before)) == (123, 456, before)
    assert createmark.decode(createmark.encode(123, 456)) == (123, 456, {})
    for bad in (None, "", "pid=x\nstart=1\n", "pid=0\nstart=1\n", "start=1\n", "pid=5\n",
                "pid=5\nstart=1\nbefore=rbd/a\n"):
        assert createmark.decode(bad) is None


def test_orphaned_only_when_that_process_is_gone():
    m = createmark.Mark(10, 99)
    assert createmark.orphaned(None) is None
    assert createmark.orphaned(m, lambda pid: 99) is None          # still runs
    assert "pid 10" in createmark.orphaned(m, lambda pid: None)    # gone
    assert createmark.orphaned(m, lambda pid: 100)                 # pid reused


HERE, THERE = "10.0.0.1", "10.0.0.2"


def img(spec, *watchers, locker=None, tag="internal"):
    from vmceph.safety import ImageFacts, Locker, Watcher
    ws = tuple(Watcher(a, 4000 + k, 100 + k) for k, a in enumerate(watchers))
    lks = ()
    if locker:
        cookie = next(w.cookie for w in ws if w.addr == locker)
        lks = (Locker("client.1", "auto %d" % cookie, locker),)
    return ImageFacts(spec, lock_tag=tag, lockers=lks, watchers=ws)


def test_appeared_one_new_local_instance_is_the_dead_qemus():
    m = createmark.Mark(1, 1, {"rbd/a": frozenset({HERE + ":0/1"}), "rbd/b": frozenset()})
    recs, doubts = createmark.appeared(m, [
        img("rbd/a", HERE + ":0/1", HERE + ":0/2", THERE + ":0/3", locker=HERE + ":0/2"),
        img("rbd/b"),
        img("rbd/c", HERE + ":0/9"),                  # not an image of the mark
    ], {HERE})
    assert [(r.image, r.addr, r.cookie) for r in recs] == [("rbd/a", HERE + ":0/2", "auto 101")]
    assert doubts == []


def test_appeared_two_new_local_instances_are_nobodys_to_release():
    m = createmark.Mark(1, 1, {"rbd/a": frozenset()})
    recs, doubts = createmark.appeared(m, [img("rbd/a", HERE + ":0/1", HERE + ":0/2")], {HERE})
    assert recs == [] and "2 watchers" in doubts[0]


def test_appeared_never_a_host_wide_address_nor_a_foreign_lock():
    m = createmark.Mark(1, 1, {"rbd/a": frozenset(), "rbd/b": frozenset()})
    recs, _ = createmark.appeared(m, [img("rbd/a", HERE + ":0/0"),
                                      img("rbd/b", HERE + ":0/7", locker=HERE + ":0/7",
                                          tag="someone-else")], {HERE})
    assert [(r.image, r.cookie) for r in recs] == [("rbd/b", None)]


def test_a_destroyed_qemus_lingering_watch_is_released_by_the_stop(w, quick):
    """Lab (tests/integration/test_recovery_proof.py): a QEMU destroyed while libvirt was
    still launching it left its watch; every start elsewhere refused it for 30 s."""
    assert w.start() == 0 and w.run("stop") == 0
    leave_orphan_mark(w)
    finish_create_in_libvirt(w, 0.0).join(5)
    qemu = [c.addr for c in w.qemu[("node1", "vm1")]]
    w.node1.on_stop = lambda g: w.qemu.pop(("node1", "vm1"), None)   # its watches stay
    assert w.run("stop") == 0, w.err
    assert not w.node1.running("vm1")
    assert all(w.ceph.is_blocklisted(a) for a in qemu), w.ceph.blocklist
    assert no_writer_left(w)
    assert "released 2 client instance(s)" in logged(w)
