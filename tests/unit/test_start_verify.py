"""Issue 9 (start, stop, generations, config file, bounded migration) on the fakes.

Oracles from the issue: a start creates the domain paused, looks at every guarded image
again and resumes only if this domain's QEMU is the only writer (else destroys it and names
the other writer); stop is never failed by a side task; a CRASHED domain is not "not
running"; a saved memory state is restored only at the disk's current generation; the
config file survives libvirt's undefine; migration's libvirt calls are bounded.
"""

import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

import fakes
from test_agent_flows import GUARDED, NODE1, NODE2, World
from vmceph import generation, ocf, startcheck, virt
from vmceph.safety import GONE, LOCAL, MEMBER, ImageFacts, Owner, Watcher

VIR = fakes.real_libvirt
STATE = "/vmceph-RBDVirtualDomain-vm1.state"


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    world.monkeypatch = monkeypatch
    yield world
    world.close()


@pytest.fixture(autouse=True)
def quick_back_off(monkeypatch):
    """The random pause of a start that backed off, shortened for the fakes."""
    from vmceph import rbdvd
    monkeypatch.setattr(rbdvd, "RACE_PAUSE_S", (0.0, 0.01))


def events(w, *names):
    out = []
    for e in w.timeline:
        name = e[1]
        if name in names:
            out.append(name)
    return out


def as_node2(w, fn):
    """Run ``fn`` as node2's agent (its libvirt, its Ceph address), then come back."""
    mp = w.monkeypatch
    fakes.install(mp, host=w.node2)
    w.ceph.client_ip = NODE2
    try:
        return fn()
    finally:
        fakes.install(mp, host=w.node1)
        w.ceph.client_ip = NODE1


def node2_start(w):
    rc = as_node2(w, lambda: w.run("start", meta={"on_node": "node2"}))
    return rc, w.reason


# ----------------------------------------------------------------------- paused start

def test_start_creates_paused_checks_stamps_then_resumes(w):
    assert w.start() == 0, w.err
    (create,) = w.node1.called("createXML")
    assert create[2] == (VIR.VIR_DOMAIN_START_PAUSED,)
    assert events(w, "createXML", "omap set", "resume") == ["createXML", "omap set", "resume"]
    assert w.node1.guest("vm1").state == VIR.VIR_DOMAIN_RUNNING
    token = w.ceph.image(GUARDED[0]).metadata[generation.META_KEY]
    assert " node1 start " in token
    assert "its QEMU is the only writer" in w.logfile.read_text()


def test_a_writer_that_appears_during_the_create_is_refused_and_named(w):
    """A racing starter on node2 whose QEMU opened the image while ours was created."""
    racer = {}
    plain = w.node1.on_create

    def create_and_race(g):
        plain(g)
        racer["c"] = w.ceph.qemu_writes(GUARDED[1], NODE2, lock=False)
    w.node1.on_create = create_and_race
    assert w.start() == ocf.OCF_ERR_GENERIC
    c = racer["c"]
    # the start backed off, looked again, and then the first look refused the racer
    for part in (GUARDED[1], "node2", c.entity, c.addr, "after backing off 1 time"):
        assert part in w.reason, (part, w.reason)
    assert "destroyed before any of its vCPUs" in w.logfile.read_text()
    assert len(w.node1.called("createXML")) == 1
    assert not w.node1.running("vm1")
    assert not w.node1.called("resume")
    assert w.node1.called("destroyFlags")
    assert generation.META_KEY not in w.ceph.image(GUARDED[0]).metadata


def test_a_start_that_backed_off_starts_once_the_racer_has_backed_off_too(w):
    """Both starters saw each other; node2's QEMU is gone by the time node1 looks again
    (node2 backed off as well): node1's second attempt, whole, starts the domain."""
    plain = w.node1.on_create
    racer = {}

    def create_and_race(g):
        plain(g)
        if "c" not in racer:   # only while the first create runs
            racer["c"] = w.ceph.qemu_writes(GUARDED[1], NODE2, lock=False)
    w.node1.on_create = create_and_race
    orig_destroy = w.node1.on_stop

    def destroyed(g):
        orig_destroy(g)
        if "c" in racer:       # node2 backs off at the same time
            w.ceph.expire_watches(racer["c"].addr)
    w.node1.on_stop = destroyed
    assert w.start() == 0, w.reason
    assert len(w.node1.called("createXML")) == 2
    assert w.node1.running("vm1") and len(w.node1.called("resume")) == 1
    log = w.logfile.read_text()
    assert "looking again in" in log and "another writer appeared" in log


def test_back_off_is_bounded_and_every_attempt_looks_again(w):
    """A writer appears at every create: every attempt is destroyed unresumed, and the
    start gives up after RACE_RETRIES looks again, with the contention as its reason."""
    from vmceph import rbdvd
    plain = w.node1.on_create
    clients = []

    def create_and_race(g):
        plain(g)
        clients.append(w.ceph.qemu_writes(GUARDED[1], NODE2, lock=False))
        for c in clients[:-1]:           # the previous racer is gone, a new one comes
            w.ceph.expire_watches(c.addr)
    w.node1.on_create = create_and_race
    w.node1.on_stop = lambda g, plain_stop=w.node1.on_stop: (
        plain_stop(g), w.ceph.expire_watches(clients[-1].addr))
    assert w.start() == ocf.OCF_ERR_GENERIC
    assert len(w.node1.called("createXML")) == rbdvd.RACE_RETRIES + 1
    assert not w.node1.called("resume") and not w.node1.running("vm1")
    assert "another writer appeared" in w.reason


def test_racing_starters_one_wins_and_the_loser_names_it(w):
    """node2's whole start runs while node1's createXML is in flight, before node1's QEMU
    has opened the images: node2 sees nobody and wins; node1's second look sees node2's
    QEMU, destroys its own and names node2."""
    plain = w.node1.on_create
    seen = {}

    def racing_create(g):
        seen["node2"] = node2_start(w)
        plain(g)                                   # node1's QEMU opens the images now
    w.node1.on_create = racing_create
    rc1 = w.start()
    assert seen["node2"][0] == 0, seen
    assert rc1 == ocf.OCF_ERR_GENERIC
    # node1 backed off, looked again, and its first look refused node2's running QEMU
    assert "node2" in w.reason and "after backing off 1 time" in w.reason
    assert "another writer appeared" in w.logfile.read_text()
    assert w.node2.running("vm1") and not w.node1.running("vm1")
    assert not w.node1.called("resume") and w.node2.called("resume")


def test_racing_starters_that_see_each_other_both_back_off(w):
    """Both QEMUs are open when each looks again (the other's destroy has not finished):
    both destroy their paused domain, neither resumes. Pacemaker retries."""
    plain1, plain2 = w.node1.on_create, w.node2.on_create
    w.node2.on_stop = lambda g: None     # node2's QEMU exits after node1 has looked
    seen = {}

    def node2_create(g):
        plain2(g)
        plain1(seen["g1"])               # node1's QEMU opens the images too, now

    def node1_create(g):
        seen["g1"] = g
        w.node2.on_create = node2_create
        seen["node2"] = node2_start(w)

    w.node1.on_create = node1_create
    rc1 = w.start()
    rc2, reason2 = seen["node2"]
    assert (rc1, rc2) == (ocf.OCF_ERR_GENERIC, ocf.OCF_ERR_GENERIC)
    assert "node1" in reason2 and "node2" in w.reason
    assert not w.node1.running("vm1") and not w.node2.running("vm1")
    assert not w.node1.called("resume") and not w.node2.called("resume")


def test_own_qemu_not_visible_after_create_is_not_taken_on_trust(w):
    w.node1.on_create = lambda g: None
    assert w.start() == ocf.OCF_ERR_GENERIC
    assert "does not show as a writer" in w.reason
    assert not w.node1.running("vm1") and not w.node1.called("resume")


def test_slow_create_abandoned_never_runs_the_guest(w):
    """createXML outlives the start's deadline: the start fails in time, and the domain
    libvirt creates afterwards stays paused (nobody resumes it); stop destroys it."""
    w.node1.create_delay = 3.0
    t0 = time.monotonic()
    assert w.run("start", meta={"timeout": "7000"}) == ocf.OCF_ERR_GENERIC
    assert time.monotonic() - t0 < 7.0
    assert "did not answer create domain" in w.reason
    deadline = time.monotonic() + 5
    while (w.node1.guest("vm1") is None or not w.node1.running("vm1")) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    g = w.node1.guest("vm1")
    assert g is not None and g.state == VIR.VIR_DOMAIN_PAUSED
    assert not w.node1.called("resume")
    assert w.run("stop") == 0, w.err
    assert not w.node1.running("vm1")


def test_a_create_refused_by_libvirt_destroys_nothing(w, monkeypatch):
    """The name was taken between the state query and createXML (an outside 'virsh
    create'): libvirt refuses the create, and the running domain is not ours to destroy."""
    w.node1.add_guest("vm1", uuid="8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d")  # no Ceph client
    monkeypatch.setattr(virt.Hypervisor, "state", lambda self, name=None, uuid=None:
                        (virt.SHUTOFF, 0))
    assert w.start() == ocf.OCF_ERR_GENERIC
    assert "already active" in w.reason
    assert w.node1.running("vm1") and not w.node1.called("destroyFlags")


def test_start_of_a_crashed_domain_is_refused(w):
    assert w.start() == 0
    w.node1.crash("vm1")
    assert w.start() == ocf.OCF_ERR_GENERIC
    assert "crashed" in w.reason and "stop the resource" in w.reason


# ----------------------------------------------------------------------- the pure rule

def W(ip, n, cookie=None):
    return Watcher("%s:0/%d" % (ip, n), 4000 + n, cookie or 9000 + n)


OWNERS = {NODE1: Owner("node1", LOCAL), NODE2: Owner("node2", MEMBER),
          "10.252.0.9": Owner("node9", GONE)}


def judge(before, after, excepted=()):
    b = [ImageFacts("rbd/a", watchers=tuple(before))]
    a = [ImageFacts("rbd/a", watchers=tuple(after))]
    return startcheck.judge_after_create(b, a, OWNERS, frozenset(excepted))


def test_rule_our_new_local_writer_alone_is_ok():
    r = judge([], [W(NODE1, 1)])
    assert r.ok and r.ours == (("rbd/a", W(NODE1, 1).addr),)


def test_rule_any_other_writer_fails_even_on_a_fenced_node():
    assert not judge([], [W(NODE1, 1), W(NODE2, 2)]).ok
    assert "node2" in judge([], [W(NODE1, 1), W(NODE2, 2)]).summary()
    assert not judge([], [W(NODE1, 1), W("10.252.0.9", 3)]).ok
    assert not judge([], [W(NODE1, 1), W("192.0.2.1", 4)]).ok


def test_rule_recovered_clients_are_excepted():
    dead = W("10.252.0.9", 3)
    assert judge([dead], [dead, W(NODE1, 1)], excepted=[dead.addr]).ok


def test_rule_a_local_writer_present_before_is_not_ours():
    old = W(NODE1, 7)
    r = judge([old], [old, W(NODE1, 1)])
    assert not r.ok and old.addr in r.summary()


def test_rule_two_new_local_writers_fail():
    r = judge([], [W(NODE1, 1), W(NODE1, 2)])
    assert not r.ok and "2 new writers on this node" in r.summary()


def test_rule_krbd_image_needs_no_new_writer_but_refuses_any_other():
    """A krbd disk: QEMU opens /dev/rbdN, no new Ceph client; this node's kernel client
    was left out of both looks (disks.without_own_krbd)."""
    b = [ImageFacts("rbd/a")]
    ok = startcheck.judge_after_create(b, [ImageFacts("rbd/a")], OWNERS,
                                       kernel_mapped={"rbd/a"})
    assert ok.ok
    bad = startcheck.judge_after_create(b, [ImageFacts("rbd/a", watchers=(W(NODE2, 2),))],
                                        OWNERS, kernel_mapped={"rbd/a"})
    assert not bad.ok and "node2" in bad.summary()
    local = startcheck.judge_after_create(b, [ImageFacts("rbd/a", watchers=(W(NODE1, 3),))],
                                          OWNERS, kernel_mapped={"rbd/a"})
    assert not local.ok


def test_rule_no_writer_of_ours_fails_and_an_uninspectable_image_fails():
    assert not judge([], []).ok
    r = startcheck.judge_after_create([ImageFacts("rbd/a")],
                                      [ImageFacts("rbd/a", error="timed out")], OWNERS)
    assert not r.ok and "timed out" in r.summary()


# ----------------------------------------------------------------------- stop side tasks

def test_save_config_to_a_missing_directory_does_not_fail_stop(w):
    w.config.write_text(fakes.domain_xml())
    assert w.start() == 0
    w.params["config"] = str(w.tmp / "unmounted" / "vm1.xml")
    rem = w.tmp / "rsctmp" / STATE.lstrip("/")
    rem.write_text(rem.read_text().replace(str(w.config), w.params["config"]))
    assert w.run("stop", {"save_config_on_stop": "true"}) == 0, w.err
    assert not w.node1.running("vm1")
    assert "cannot save the configuration of vm1" in w.logfile.read_text()


def test_save_config_keeps_symlink_owner_and_hides_secrets(w):
    real = w.tmp / "real" / "vm1.xml"
    real.parent.mkdir()
    real.write_text(fakes.domain_xml())
    os.chmod(real, 0o644)
    w.config.unlink()
    w.config.symlink_to(real)
    assert w.start() == 0
    w.node1.guest("vm1").xml = "<domain><name>vm1</name><!-- secret --></domain>"
    assert w.run("stop", {"save_config_on_stop": "true"}) == 0, w.err
    assert w.config.is_symlink() and os.readlink(w.config) == str(real)
    assert "secret" in real.read_text()
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640      # o+r dropped: secure XML
    assert [p.name for p in real.parent.iterdir()] == ["vm1.xml"]  # no temporary left


def test_failing_snapshot_does_not_fail_stop(w):
    snap = w.tmp / "snap"
    snap.mkdir()
    assert w.start(snapshot=str(snap)) == 0
    w.node1.save_error = "operation failed: /snap: No space left on device"
    assert w.run("stop", {"snapshot": str(snap)}) == 0, w.err
    assert not w.node1.running("vm1")
    assert "cannot save the memory of vm1" in w.logfile.read_text()
    assert list(snap.iterdir()) == []
    # an error answer: libvirt is fine, the guest is shut down as without snapshot
    assert w.node1.called("shutdownFlags") and not w.node1.called("destroyFlags")


def test_snapshot_that_does_not_answer_in_time_is_abandoned_and_the_domain_destroyed(w):
    """A save still running in libvirtd holds the domain's job: a shutdown request would
    wait for it; destroy at once, within the stop's deadline."""
    snap = w.tmp / "snap"
    snap.mkdir()
    assert w.start(snapshot=str(snap)) == 0
    w.node1.delays["save"] = 30.0
    t0 = time.monotonic()
    assert w.run("stop", {"snapshot": str(snap)}, meta={"timeout": "10000"}) == 0, w.err
    assert time.monotonic() - t0 < 10.0
    assert not w.node1.running("vm1")
    assert not w.node1.called("shutdownFlags") and w.node1.called("destroyFlags")
    assert "did not answer save" in w.logfile.read_text()


def test_snapshot_into_a_file_that_is_no_directory_does_not_fail_stop(w):
    blocker = w.tmp / "notadir"
    blocker.write_text("")
    assert w.start() == 0
    assert w.run("stop", {"snapshot": str(blocker / "sub")}) == 0, w.err
    assert not w.node1.running("vm1")


def test_crashed_domain_fails_the_monitor_and_stop_destroys_it(w):
    assert w.start() == 0
    w.node1.crash("vm1")
    assert w.run("monitor", interval=10000) == ocf.OCF_ERR_GENERIC
    assert "crashed" in w.reason and "on_crash=preserve" in w.reason
    assert w.run("monitor") == ocf.OCF_ERR_GENERIC          # a probe too: never "not running"
    assert w.run("stop") == 0, w.err
    assert not w.node1.running("vm1")
    assert not w.node1.called("shutdownFlags") and w.node1.called("destroyFlags")


# ----------------------------------------------------------------------- generations

def test_snapshot_restored_while_current(w):
    snap = w.tmp / "snap"
    assert w.start(snapshot=str(snap)) == 0
    assert w.run("stop", {"snapshot": str(snap)}) == 0, w.err
    token = w.ceph.image(GUARDED[0]).metadata[generation.META_KEY]
    assert (snap / "vm1.state.gen").read_text().strip() == token
    assert w.start(snapshot=str(snap)) == 0, w.err
    (restore,) = w.node1.called("restoreFlags")
    assert restore[2][1] == VIR.VIR_DOMAIN_SAVE_PAUSED
    assert w.node1.guest("vm1").state == VIR.VIR_DOMAIN_RUNNING
    assert not (snap / "vm1.state").exists() and not (snap / "vm1.state.gen").exists()
    assert w.ceph.image(GUARDED[0]).metadata[generation.META_KEY] != token


def test_stale_snapshot_discarded_after_the_guest_ran_elsewhere(w):
    snap = w.tmp / "snap"
    assert w.start(snapshot=str(snap)) == 0
    assert w.run("stop", {"snapshot": str(snap)}) == 0
    # the guest runs on node2 and writes; then stops there
    assert node2_start(w)[0] == 0
    assert as_node2(w, lambda: w.run("stop", meta={"on_node": "node2"})) == 0
    assert w.start(snapshot=str(snap)) == 0, w.err
    assert not w.node1.called("restoreFlags")
    assert len(w.node1.called("createXML")) == 2
    log = w.logfile.read_text()
    assert "discarding the saved memory state" in log and "has run since" in log
    assert not (snap / "vm1.state").exists()


def test_snapshot_without_a_recorded_generation_is_discarded(w):
    snap = w.tmp / "snap"
    assert w.start(snapshot=str(snap)) == 0
    assert w.run("stop", {"snapshot": str(snap)}) == 0
    (snap / "vm1.state.gen").unlink()
    assert w.start(snapshot=str(snap)) == 0
    assert not w.node1.called("restoreFlags")
    assert "no generation was recorded" in w.logfile.read_text()


# ----------------------------------------------------------------------- config file

def test_config_in_libvirts_own_directory_survives_the_undefine(w):
    qemu_dir = w.tmp / "etc-libvirt-qemu"
    qemu_dir.mkdir()
    config = qemu_dir / "vm1.xml"
    data = fakes.domain_xml().encode()
    config.write_bytes(data)
    os.chmod(config, 0o600)
    w.node1.config_dir = str(qemu_dir)
    w.node1.add_guest("vm1", uuid="8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", running=False,
                      persistent=True)
    assert w.start(config=str(config)) == 0, w.err
    assert w.node1.called("undefine") and w.node1.running("vm1")
    assert config.read_bytes() == data
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert w.node1.guest("vm1").xml == data.decode()


# ----------------------------------------------------------------------- migration

def test_migration_with_a_hanging_libvirt_ends_within_its_deadline(w):
    w.node1.add_guest("vm9")
    w.node1.migration = "block"
    w.node1.delays["jobStats"] = 30.0
    deadline = ocf.Deadline(5.0, margin_s=0)
    hv = virt.Hypervisor("qemu:///system", deadline, libvirt_mod=w.node1.module)
    dom = hv.lookup("vm9")
    t0 = time.monotonic()
    with pytest.raises(virt.MigrationTimeout) as e:
        virt.migrate(hv, dom, "qemu://node2/system", {}, VIR.VIR_MIGRATE_LIVE |
                     VIR.VIR_MIGRATE_PEER2PEER, poll=0.05)
    assert time.monotonic() - t0 < 5.5
    assert w.node1.called("abortJob")
    assert "still runs on this node" in str(e.value)


def test_migration_timeout_reason_says_where_the_guest_runs(w):
    """The job completes as the deadline comes (the abort is too late): the reason must
    not claim the guest still runs here."""
    w.node1.add_guest("vm9")
    w.node1.migration = "block"
    hv = virt.Hypervisor("qemu:///system", ocf.Deadline(4.0, margin_s=0),
                         libvirt_mod=w.node1.module)
    dom = hv.lookup("vm9")
    w.node1.delays["abortJob"] = 30.0     # the abort never answers in time
    g = w.node1.guest("vm9")

    def finish_elsewhere():                # the guest ends up on node2 meanwhile
        while g.job is None:
            time.sleep(0.01)
        time.sleep(1.5)
        w.node1.power_off(g, VIR.VIR_DOMAIN_SHUTOFF_MIGRATED)
    threading.Thread(target=finish_elsewhere, daemon=True).start()
    with pytest.raises(virt.MigrationTimeout) as e:
        virt.migrate(hv, dom, "qemu://node2/system", {}, VIR.VIR_MIGRATE_LIVE |
                     VIR.VIR_MIGRATE_PEER2PEER, poll=0.05)
    assert "still runs on this node" not in str(e.value)
    assert "no longer runs on this node" in str(e.value) or "check both" in str(e.value)


# ----------------------------------------------------------------------- architecture

@pytest.mark.parametrize("module", ["rbdvd.py", "stopseq.py", "migration.py"])
def test_agent_uses_only_the_hypervisors_public_methods(module):
    src = (Path(__file__).resolve().parents[2] / "lib" / "vmceph" / module).read_text()
    assert "._call(" not in src
    assert ".mod." not in src and "hv.mod" not in src
    assert "._spec" not in src
    camel = re.findall(r"\.([a-z]+[A-Z]\w*)\(", src)
    assert camel == [], "libvirt methods called from %s: %s" % (module, camel)


def test_virt_constants_are_libvirts():
    for ours, theirs in ((virt.START_PAUSED, VIR.VIR_DOMAIN_START_PAUSED),
                         (virt.SAVE_PAUSED, VIR.VIR_DOMAIN_SAVE_PAUSED),
                         (virt.XML_SECURE, VIR.VIR_DOMAIN_XML_SECURE),
                         (virt.XML_INACTIVE, VIR.VIR_DOMAIN_XML_INACTIVE),
                         (virt.JOB_STATS_COMPLETED, VIR.VIR_DOMAIN_JOB_STATS_COMPLETED),
                         (virt.JOB_STATS_KEEP_COMPLETED,
                          VIR.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED),
                         (virt.JOB_NONE, VIR.VIR_DOMAIN_JOB_NONE),
                         (virt.DESTROY_GRACEFUL, VIR.VIR_DOMAIN_DESTROY_GRACEFUL),
                         (virt.PAUSED_USER, VIR.VIR_DOMAIN_PAUSED_USER),
                         (virt.MIGRATE_PARAM_URI, VIR.VIR_MIGRATE_PARAM_URI),
                         (virt.MIGRATE_PARAM_BANDWIDTH, VIR.VIR_MIGRATE_PARAM_BANDWIDTH)):
        assert ours == theirs
