"""The watcher checker (vmlab/invariants.py) as issue 11 tightens it, from the issue's text:
an overlap is excused only while at most one QEMU runs (a migration: a job on the source,
the target paused), both sides running is a violation, two writers on one node are a
violation, a blocklist excuse expires with its entry, errored inspections are no samples
and a sampling gap over 2 s is a violation unless Ceph itself did not answer. Fed with
samples as imagewatch.py prints them and libvirt states as the poller records them."""

import time

from vmlab.imagewatch import parse_blocklist, parse_blocklist_until
from vmlab.invariants import InvariantChecker, parse_state

IMG = "vm1-disk0"


class FakeLab:
    pool = "rbd"
    indexes = range(1, 4)

    def node_name(self, i):
        return f"node{i}"

    def node_ip(self, i):
        return f"10.9.0.{i}"


def checker():
    c = InvariantChecker(FakeLab(), {"vm1": [IMG], "vm2": ["vm2-disk0"]})
    c._alive_hist = [(time.monotonic() - 100, frozenset((1, 2, 3)))]
    c.T = time.monotonic()   # "now" of the scans and libvirt's answers the test makes up
    return c


def qemus_on(c, nodes, t=None):
    """/proc scans around t: a QEMU with IMG on its command line on each node {node: pid}."""
    t = c.T if t is None else t
    c._image_hist[IMG] = [(t + k * 0.2, {n: [{"pid": pid, "guest": "vm1", "age": 10.0 * n}]
                                         for n, pid in nodes.items()})
                          for k in range(-3, 4)]


def answer(c, t, node, pid, state, job=False, image=IMG):
    """The state poller's round [t, t + 0.1] answered (state, job) for (node, pid)."""
    passes = c._passes.setdefault(image, [])
    round_ = next((p for p in passes if p[0] == t), None)
    if round_ is None:
        round_ = (t, t + 0.1, {})
        passes.append(round_)
        passes.sort(key=lambda p: p[0])
    round_[2][(node, pid)] = (state, job)


def states(c, node, pid, before, after, job=False, t=None):
    """libvirt's answers for (node, pid) in a round just before and one just after t."""
    t = c.T if t is None else t
    answer(c, t - 0.6, node, pid, before, job)
    answer(c, t + 0.3, node, pid, after, job)


def sample(watchers, image=IMG, blocklist=(), until=None, wall=None, t1=None, error=None,
           took=0.05):
    t1 = time.monotonic() if t1 is None else t1
    state = {"error": error} if error else {
        "watchers": [{"addr": a, "id": 4000 + k, "cookie": k} for k, a in enumerate(watchers)],
        "lockers": []}
    images = {image: state, "vm2-disk0": {"watchers": [], "lockers": []}}
    return {"t0": t1 - took, "t1": t1, "images": images, "blocklist": list(blocklist),
            "blocklist_until": until or {}, "wall": wall or time.time()}


def judged(c):
    c._judge_pending(time.monotonic() + 10, final=True)
    return [v.kind for v in c.violations]


A1, A2, B1 = "10.9.0.1:0/111", "10.9.0.2:0/222", "10.9.0.1:0/333"


# ---------------------------------------------------------------------- two writers
def test_two_watchers_on_one_node_are_two_writers():
    c = checker()
    qemus_on(c, {1: 11})
    c._check_sample(sample([A1, B1]))
    assert judged(c) == ["two-writers"] and "one node" in c.violations[0].text


def test_both_sides_running_is_a_violation_even_with_a_migration_job():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    states(c, 1, 11, "running", "running", job=True)
    states(c, 2, 22, "running", "running")
    c._check_sample(sample([A1, A2]))
    assert judged(c) == ["two-writers"]


def test_a_migration_is_excused_while_the_source_has_a_job_and_the_target_is_paused():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    states(c, 1, 11, "running", "running", job=True)
    states(c, 2, 22, "paused", "paused")
    c._check_sample(sample([A1, A2]))
    assert judged(c) == [] and c.migration_overlaps[0][-1] == "migration"


def test_the_handover_inside_one_sample_is_excused():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    states(c, 1, 11, "running", "paused", job=True)     # source paused at the end
    states(c, 2, 22, "paused", "running")               # target resumed
    c._check_sample(sample([A1, A2]))
    assert judged(c) == []


def test_a_racing_loser_paused_and_never_resumed_is_not_a_writer():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    states(c, 1, 11, "running", "running")
    states(c, 2, 22, "paused", "paused")
    c._check_sample(sample([A1, A2]))
    assert judged(c) == [] and c.migration_overlaps[0][-1] == "paused-overlap"


def test_a_qemu_libvirt_did_not_describe_counts_as_running():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    states(c, 1, 11, "running", "running")
    c._check_sample(sample([A1, A2]))
    assert judged(c) == ["two-writers"]


def test_an_overlap_is_judged_only_once_libvirt_answered_after_the_sample():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    c._check_sample(sample([A1, A2]))
    c._judge_pending(time.monotonic() + 1.5)
    assert c._pending and c.violations == []
    states(c, 1, 11, "running", "running", job=True)
    states(c, 2, 22, "paused", "paused")
    c._judge_pending(time.monotonic() + 1.5)
    assert not c._pending and c.violations == []


def test_the_watch_of_a_qemu_that_no_longer_exists_is_no_writer():
    c = checker()
    qemus_on(c, {1: 11})                                  # node2 has no QEMU with the image
    c._check_sample(sample([A1, A2]))
    assert judged(c) == [] and c.migration_overlaps[0][-1] == "lingering-watch"


def test_the_state_poller_reports_both_running():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    asked = []

    def poll(node, guest):
        asked.append(node)
        if len(asked) == 2:          # a sample taken during the round: both watch
            c._check_sample(sample([A1, A2]))
        return "running", False
    c._poll_state = poll
    assert c._poll_once() is True
    assert [v.kind for v in c.violations] == ["both-running"]
    assert asked == [1, 2], "the younger QEMU (smaller age) is asked first"
    asked.clear()
    c._poll_once()
    assert [v.kind for v in c.violations] == ["both-running"], "reported once per pair"


def test_a_qemu_fenced_at_ceph_that_goes_on_running_is_not_both_running():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    now = time.time()

    def poll(node, guest):       # node1's client blocklisted: its watch is no writer
        c._check_sample(sample([A1, A2], blocklist=[A1], until={A1: now + 600}, wall=now))
        return "running", False
    c._poll_state = poll
    c._poll_once()
    assert c.violations == []


def test_the_state_poller_accepts_a_paused_target():
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    c._poll_state = lambda node, guest: ("running", True) if node == 2 else ("paused", False)
    c._poll_once()
    assert c.violations == [] and c._passes[IMG][-1][2][(1, 11)] == ("paused", False)


# ---------------------------------------------------------------------- the blocklist
def test_a_blocklisted_watcher_is_excused_until_its_entry_expires():
    now = time.time()
    c = checker()
    qemus_on(c, {1: 11, 2: 22})
    states(c, 1, 11, "running", "running")
    states(c, 2, 22, "running", "running")
    c._check_sample(sample([A1, A2], blocklist=[A1], until={A1: now + 30}, wall=now))
    assert judged(c) == []
    c._check_sample(sample([A1, A2], blocklist=[A1], until={A1: now - 1}, wall=now))
    assert judged(c) == ["two-writers"]


def test_the_blocklist_is_read_with_each_entrys_expiry():
    out = ('[{"addr":"10.224.0.1:0/855890594","until":"2026-12-01T18:57:49.365921+0000"}]'
           '\n[]')
    until = parse_blocklist_until(out)
    assert list(until) == ["10.224.0.1:0/855890594"]
    assert abs(until["10.224.0.1:0/855890594"] - 1796151469.365921) < 1e-3
    assert parse_blocklist(out) == ["10.224.0.1:0/855890594"]


# ---------------------------------------------------------------------- coverage
def test_an_errored_inspection_is_no_sample():
    c = checker()
    t = time.monotonic()
    c._check_sample(sample([A1], t1=t))
    c._check_sample(sample([], t1=t + 0.5, error="TimedOut: [errno 110]"))
    assert c.image_samples[IMG] == 1 and c.samples == 1
    assert c.image_samples["vm2-disk0"] == 2


def test_a_gap_while_ceph_answered_is_a_coverage_violation():
    c = checker()
    t = time.monotonic()
    c._check_sample(sample([A1], t1=t))
    c._check_sample(sample([A1], t1=t + 2.6))
    assert [v.kind for v in c.violations] == ["coverage", "coverage"]   # both images
    cov = c.coverage()
    assert cov[IMG]["longest_gap_s"] >= 2.5 and cov[IMG]["cause"] == "checker"


def test_a_gap_while_ceph_did_not_answer_is_reported_with_its_cause():
    c = checker()
    t = time.monotonic()
    c._check_sample(sample([A1], t1=t))
    c._check_sample(sample([], t1=t + 3.0, error="TimedOut: [errno 110]"))
    c._check_sample(sample([A1], t1=t + 6.0))
    # vm1-disk0's gap is Ceph's; vm2-disk0 was sampled only every 3 s: the checker's
    assert {v.text.split(":")[0] for v in c.violations} == {"vm2-disk0"}
    c = checker()
    c._check_sample(sample([A1], t1=t))
    c._check_sample(sample([A1], t1=t + 5.0, took=4.0))          # Ceph answered slowly
    assert c.violations == []
    cov = c.coverage(since=t)
    assert cov[IMG]["cause"].startswith("Ceph did not answer") and \
        cov[IMG]["longest_gap_s"] >= 4.9


def test_a_short_gap_is_no_violation():
    c = checker()
    t = time.monotonic()
    for k in range(5):
        c._check_sample(sample([A1], t1=t + k * 0.5))
    assert c.violations == [] and c.coverage()[IMG]["cause"] == ""


def test_libvirts_answers_are_parsed():
    assert parse_state("running\n\nJob type:         None        \n\n") == ("running", False)
    assert parse_state("paused\n\nJob type:         Unbounded\nOperation: Incoming "
                       "migration\n") == ("paused", True)
    assert parse_state("", rc=1) == ("absent", False)


def test_a_migration_source_libvirt_still_calls_running_is_asked_of_its_qemu():
    """libvirt's cached state of a migration's source may lag QEMU's STOP event: for a
    'running' domain with a migration job the poller asks QEMU (HMP info status)."""
    from vmlab.invariants import parse_qemu_status
    assert parse_qemu_status("VM status: paused (postmigrate)\r\n") == "paused"
    assert parse_qemu_status("VM status: running\r\n") == "running"
    assert parse_qemu_status("error: Requested operation is not valid\n") is None
    c = checker()
    calls = []

    class Lab(type(c.lab)):
        def run(self, node, argv, timeout=None, check=True):
            calls.append(argv)
            out = ("running\nJob type:         Unbounded\n" if "domstate" in argv[-1]
                   else "VM status: paused (postmigrate)\n")
            return type("P", (), {"stdout": out, "returncode": 0})()
    c.lab = Lab()
    assert c._poll_state(1, "vm1") == ("paused", True)
    assert calls[-1][-3:] == ["vm1", "--hmp", "info status"]


def handover_scans(c, t, source_gone):
    """/proc scans around t of a migration's source (node 1, pid 11) and target (node 2,
    pid 22); with ``source_gone``, a last scan at t + 0.4 shows the target alone."""
    c._image_hist[IMG] = [(t + k * 0.2, {1: [{"pid": 11}], 2: [{"pid": 22}]})
                          for k in (-3, -2, -1, 0, 1)] + (
        [(t + 0.4, {2: [{"pid": 22}]})] if source_gone else [])


def test_a_migration_source_destroyed_right_after_the_handover_is_no_writer():
    # the sample sees both watchers between the target's resume and the source's destroy;
    # the poller's last look at the source was before the handover, then its QEMU is gone
    c = checker()
    t = time.monotonic()
    handover_scans(c, t, source_gone=True)
    answer(c, t - 0.6, 1, 11, "running", True)
    states(c, 2, 22, "paused", "running", t=t)
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == []
    # without the scan that shows it gone, the source's state is unknown: running
    c = checker()
    handover_scans(c, t, source_gone=False)
    answer(c, t - 0.6, 1, 11, "running", True)
    states(c, 2, 22, "paused", "running", t=t)
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == ["two-writers"]


def test_answers_from_two_different_rounds_do_not_make_both_running():
    # the source answered "running" in a round before the handover, the target
    # "running" only in the next round: never both at once
    c = checker()
    t = time.monotonic()
    qemus_on(c, {1: 11, 2: 22}, t=t)
    answer(c, t - 0.6, 1, 11, "running", True)
    answer(c, t - 0.6, 2, 22, "paused")
    answer(c, t + 0.2, 2, 22, "paused")          # round 1 after: target still paused ...
    answer(c, t + 0.2, 1, 11, "running", True)   # ... source still running
    answer(c, t + 0.7, 2, 22, "running")         # round 2: handed over
    answer(c, t + 0.7, 1, 11, "paused", True)
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == []


def test_a_gap_while_the_sampler_said_it_waits_on_ceph_is_ceph_s():
    c = checker()
    t = time.monotonic()
    c._on_line(sample([A1], t1=t))
    c._on_line({"busy": IMG, "since": t + 0.5, "t": t + 2.0})        # imagewatch heartbeat
    c._on_line(sample([A1], t1=t + 4.0))
    assert c.violations == []
    assert c.coverage(since=t)[IMG]["cause"] == \
        f"Ceph did not answer: an inspection of {IMG} waited on Ceph"
    c._on_line({"t0": t + 4.1, "connect_error": "error connecting to the cluster"})
    c._on_line(sample([A1], t1=t + 7.0))
    assert c.violations == []


def test_coverage_reports_the_longest_gap_under_the_limit_too():
    c = checker()
    t = time.monotonic()
    for k, dt in enumerate((0.5, 1.7, 0.5)):
        c._check_sample(sample([A1], t1=t))
        t += dt
    c._check_sample(sample([A1], t1=t))
    cov = c.coverage(since=t - 5)
    assert abs(cov[IMG]["longest_gap_s"] - 1.7) < 0.05 and cov[IMG]["cause"] == ""


def test_a_round_in_which_a_libvirtd_did_not_answer_is_not_the_one_judged():
    """Mass-failover evacuation in the lab: the target's virsh failed under load (state
    "unknown"), the round was judged at once, the target counted as running: a
    two-writers the write oracle did not see. A round without an answer for one of the
    pair is skipped; the next round that answered for both is judged."""
    c = checker()
    t = time.monotonic()
    qemus_on(c, {1: 11, 2: 22}, t=t)
    answer(c, t - 0.6, 1, 11, "running", True)
    answer(c, t - 0.6, 2, 22, "paused")
    answer(c, t + 0.2, 1, 11, "running", True)   # round 1 after: node 2 did not answer
    answer(c, t + 0.7, 2, 22, "running")         # round 2: both answered, handed over
    answer(c, t + 0.7, 1, 11, "paused", True)
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == []
    # both running in the round that answered for both is still a violation
    c = checker()
    qemus_on(c, {1: 11, 2: 22}, t=t)
    answer(c, t + 0.2, 1, 11, "running", True)
    answer(c, t + 0.7, 2, 22, "running")
    answer(c, t + 0.7, 1, 11, "running", True)
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == ["two-writers"]


def test_the_state_poller_records_no_answer_for_a_failed_poll():
    c = checker()
    qemus_on(c, {1: 11, 2: 22}, t=time.monotonic())
    c._poll_state = lambda node, guest: ("unknown", False) if node == 2 else ("running", False)
    c._poll_once()
    (_, _, answers), = c._passes[IMG]
    assert answers == {(1, 11): ("running", False)}


def test_a_target_libvirt_was_not_asked_about_before_the_sample_is_judged_after_it():
    """Corosync-cut test, lab 2026-12-02: at a live migration to node3 the target's QEMU
    had no answer from the round before the sample (it was not polled then), and its state
    after the sample was taken for its state before: "QEMUs running on node2 (running),
    node3 (unknown)" while the write oracle saw one writer. Before the sample only what
    libvirt said counts; the round after judges the target."""
    c = checker()
    t = time.monotonic()
    handover_scans(c, t, source_gone=True)
    answer(c, t - 0.6, 1, 11, "running", True)       # the source, before; then destroyed
    answer(c, t + 0.7, 2, 22, "running")             # the target, after only
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == []
    # the same target, still never answered: no answer counts as running, and the source
    # runs on: two writers
    c = checker()
    handover_scans(c, t, source_gone=False)
    answer(c, t - 0.6, 1, 11, "running", True)
    answer(c, t + 0.7, 1, 11, "running", True)
    c._check_sample(sample([A1, A2], t1=t))
    assert judged(c) == ["two-writers"]


def test_the_poller_keeps_asking_while_an_overlap_waits_even_for_one_qemu():
    """The scans show the target alone (the source destroyed): without this round no
    answer would come for it, and an overlap waiting on it would be judged unanswered."""
    c = checker()
    t = time.monotonic()
    c._image_hist[IMG] = [(t, {2: [{"pid": 22, "guest": "vm1", "age": 1.0}]})]
    asked = []
    c._poll_state = lambda node, guest: asked.append(node) or ("running", False)
    c._poll_once()
    assert asked == [] and IMG not in c._passes      # nothing waits: one QEMU, no round
    c._pending.append((t - 0.1, t, "vm1", IMG, [(1, A1), (2, A2)], "node1, node2"))
    c._poll_once()
    assert asked == [2] and c._passes[IMG][-1][2] == {(2, 22): ("running", False)}
