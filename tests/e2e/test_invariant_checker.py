"""The invariant checker itself (vmlab/invariants.py), without a lab: it must flag what it
is there to flag, and nothing else. Fed with samples as imagewatch.py prints them."""

import time

import pytest

from vmlab.invariants import InvariantChecker

pytestmark = pytest.mark.e2e


class FakeLab:
    pool = "rbd"
    indexes = range(1, 4)

    def node_name(self, i):
        return f"node{i}"

    def node_ip(self, i):
        return f"10.9.0.{i}"


def checker(alive=(1, 2, 3), qemus=None):
    c = InvariantChecker(FakeLab(), {"vm1": ["vm1-disk0"], "vm2": ["vm2-disk0"]},
                         lost_after=5.0)
    now = time.monotonic()
    c._alive_hist = [(now - 100, frozenset(alive))]
    for vm, nodes in (qemus or {}).items():
        c._qemu_hist[vm].append((now, nodes))
    return c


def judged(c):
    """What the checker decides once its /proc scans have caught up with the samples."""
    c._judge_pending(time.monotonic(), final=True)
    return [v.kind for v in c.violations]


def sample(watchers, blocklist=(), image="vm1-disk0"):
    now = time.monotonic()
    return {"t0": now - 0.05, "t1": now, "images": {image: {
        "watchers": [{"addr": a, "id": 4000 + k, "cookie": k} for k, a in enumerate(watchers)],
        "lockers": []}}, "blocklist": list(blocklist)}


def test_two_nodes_writing_one_image_is_a_violation():
    c = checker(qemus={"vm1": {1: {"incoming": False, "age": 300}}})
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/2"]))
    assert judged(c) == ["two-writers"]
    assert "node1" in c.violations[0].text and "node2" in c.violations[0].text


def test_one_node_writing_is_fine():
    c = checker()
    c._check_sample(sample(["10.9.0.1:0/1"]))
    assert judged(c) == []


def migrating(c, src_state="running", dst_state="paused", job=True):
    """vm1-disk0 open by QEMUs on node1 (pid 11, the source) and node2 (pid 22), with
    libvirt's states around now (what the checker's state poller records)."""
    now = time.monotonic()
    c._image_hist["vm1-disk0"] = [(now + k * 0.2, {1: [{"pid": 11}], 2: [{"pid": 22}]})
                                  for k in (-2, -1, 0, 1, 2)]
    c._passes["vm1-disk0"] = [(t, t + 0.1, {(1, 11): (src_state, job), (2, 22): (dst_state, False)})
                              for t in (now - 0.6, now + 0.3)]


def test_the_migrating_pair_is_allowed_while_libvirt_reports_the_job_and_a_paused_target():
    c = checker()
    migrating(c)
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/2"]))
    assert judged(c) == [] and [o[-1] for o in c.migration_overlaps] == ["migration"]


def test_an_overlap_waits_for_libvirts_states_after_the_sample():
    c = checker()
    c._image_hist["vm1-disk0"] = [(time.monotonic(), {1: [{"pid": 11}], 2: [{"pid": 22}]})]
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/2"]))
    c._judge_pending(time.monotonic() + 1.5)                          # no state yet
    assert c.violations == [] and c._pending
    migrating(c)
    c._judge_pending(time.monotonic() + 1.5)
    assert c.violations == [] and not c._pending and len(c.migration_overlaps) == 1


def test_both_qemus_running_is_two_writers_whatever_their_incoming_flag():
    c = checker()
    migrating(c, dst_state="running")
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/2"]))
    assert judged(c) == ["two-writers"]


def test_a_third_node_is_not_part_of_the_migration():
    c = checker()
    migrating(c)
    for _, qemus in c._image_hist["vm1-disk0"]:
        qemus[3] = [{"pid": 33}]                                      # a third QEMU, no state
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.3:0/3"]))
    assert judged(c) == ["two-writers"]


def test_dead_node_and_blocklisted_watchers_are_not_writers():
    c = checker(alive=(1, 3))
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/2"]))       # node2 is down
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.3:0/3"], blocklist=["10.9.0.3:0/3"]))
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.3:0/9"], blocklist=["10.9.0.3:0/0"]))
    assert judged(c) == []


def test_a_watch_left_by_an_earlier_life_of_a_node_is_not_a_writer():
    c = checker(alive=(1, 3))
    c._check_sample(sample(["10.9.0.2:0/2"]))                         # seen while node2 down
    now = time.monotonic()
    c._alive_hist.append((now - 0.0, frozenset((1, 2, 3))))          # node2 boots again
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/2"]))         # its old watch lingers
    assert judged(c) == []
    c._check_sample(sample(["10.9.0.1:0/1", "10.9.0.2:0/7"]))         # a new writer there
    assert judged(c) == ["two-writers"]


def test_a_vm_without_qemu_for_too_long_is_lost_unless_expected():
    class Scan:
        def scan_images(self):
            return {"vm1": {}, "vm2": {1: {"incoming": False, "age": 9}}}, {1, 2, 3}, {}
    c = checker()
    c._scan = Scan()
    c._last_running = {"vm1": time.monotonic() - 10, "vm2": time.monotonic()}
    c.expect_down("vm2")
    c._scan_once()
    assert [v.kind for v in c.violations] == ["lost"] and "vm1" in c.violations[0].text
    c._scan_once()
    assert len(c.violations) == 1, "reported once"
