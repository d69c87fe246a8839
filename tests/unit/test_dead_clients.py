"""A QEMU killed while it held its images is restarted in place without an operator.

The chaos soak's "qemu-kill" fault (docs/reliability.md): the killed QEMU's watch lingers
up to the OSD's watch timeout and its exclusive lock stays for ever, and the start rules
refuse a writer or holder on this node without proof that it is dead (issue 10). The proof
is local: the agent recorded which client instances its QEMU had, with the QEMU's pid and
start time; once that process is gone, those instances are dead for certain.

The expectations are written from that rule, not from the code:
- a client instance of this node that the record names, whose process is gone: recovered
  (blocklisted, its lock broken), then the domain starts;
- the same client while its process still runs (same pid, same start time): refused;
- a client of this node the record does not name: refused, as before;
- membership unreadable: nothing is recovered (issue 10), refused.
"""

import os
import subprocess

from test_agent_flows import NODE1, World, GUARDED   # the shared two-node world

import pytest

from vmceph import deadclients, ocf, safety
from vmceph.safety import (Facts, ImageFacts, Locker, Owner, Watcher, decide_start)


# ------------------------------------------------------------------ the record

def test_record_round_trip_and_garbage():
    text = deadclients.encode(123, 456, [("rbd/a", "10.0.0.1:0/77"), ("rbd/b", "10.0.0.1:0/78")])
    assert deadclients.decode(text) == (123, 456, (("rbd/a", "10.0.0.1:0/77"),
                                                    ("rbd/b", "10.0.0.1:0/78")), None, None)
    rec = deadclients.decode(deadclients.encode(1, 2, [("rbd/a", "10.0.0.1:0/77")],
                                                "b00t-1d", "node1"))
    assert (rec.pid, rec.start, rec.boot, rec.node) == (1, 2, "b00t-1d", "node1")
    for bad in ("", None, "pid=x\nstart=1\n", "start=1\n", "pid=0\nstart=1\n",
                "pid=1\nstart=1\nclient=nospace\n"):
        assert deadclients.decode(bad) is None, bad


def test_dead_only_when_the_process_is_gone_or_another():
    rec = deadclients.Record(4242, 1000, (("rbd/a", "10.0.0.1:0/77"),))
    assert deadclients.dead(rec, lambda pid: 1000) == (frozenset(), "")      # still runs
    addrs, note = deadclients.dead(rec, lambda pid: None)                     # gone
    assert addrs == {"10.0.0.1:0/77"} and "pid 4242" in note
    addrs, _ = deadclients.dead(rec, lambda pid: 2000)                        # pid reused
    assert addrs == {"10.0.0.1:0/77"}
    assert deadclients.dead(None) == (frozenset(), "")


def test_a_record_of_an_earlier_boot_names_dead_clients_whatever_runs_under_its_pid():
    """After a reboot every process of the earlier boot is gone: its clients are dead even
    if a process of this boot has the same pid and start time (the tick counter restarts
    at boot, so that is not even rare). Same boot, or a boot unknown: the pid rule."""
    rec = deadclients.Record(4242, 1000, (("rbd/a", "10.0.0.1:0/77"),), "aaaa-1", "node1")
    runs = lambda pid: 1000                                                   # noqa: E731
    addrs, note = deadclients.dead(rec, runs, boot_now="bbbb-2")
    assert addrs == {"10.0.0.1:0/77"} and "rebooted" in note
    assert deadclients.dead(rec, runs, boot_now="aaaa-1") == (frozenset(), "")
    assert deadclients.dead(rec, runs, boot_now=None) == (frozenset(), "")
    old = deadclients.Record(4242, 1000, (("rbd/a", "10.0.0.1:0/77"),))      # no boot id
    assert deadclients.dead(old, runs, boot_now="bbbb-2") == (frozenset(), "")


def test_boot_id_is_read_from_the_kernel(tmp_path):
    assert deadclients.boot_id() and len(deadclients.boot_id()) == 36
    f = tmp_path / "boot_id"
    f.write_text("not a uuid\n")
    assert deadclients.boot_id(str(f)) is None
    assert deadclients.boot_id(str(tmp_path / "missing")) is None


def test_start_time_of_a_real_process():
    p = subprocess.Popen(["sleep", "30"])
    try:
        t = deadclients.process_start_time(p.pid)
        assert isinstance(t, int) and t > 0
        assert deadclients.process_start_time(p.pid) == t
    finally:
        p.kill()
        p.wait()
    assert deadclients.process_start_time(p.pid) is None


# ------------------------------------------------------------------ the pure rule

ADDR = "10.0.0.1:0/3001"


def _facts(watch=True, dead=True, known=True):
    watchers = (Watcher(ADDR, 3001, 7),) if watch else ()
    img = ImageFacts("rbd/vm1", True, watchers=watchers,
                     lockers=(Locker("client.3001", "auto 7", ADDR),), lock_tag="internal")
    return Facts(True, "quorum a,b,c", (img,), {"10.0.0.1": Owner("node1", safety.LOCAL, "own")},
                 "node1", False, membership_known=known,
                 dead_local=frozenset({ADDR}) if dead else frozenset(),
                 dead_local_note="this domain's previous QEMU (pid 9) on this node no longer runs")


@pytest.mark.parametrize("watch", [True, False], ids=["watch-lingers", "lock-only"])
def test_dead_local_client_is_recovered(watch):
    v = decide_start(_facts(watch=watch))
    assert v.kind == safety.RECOVER_THEN_START, v.reasons
    assert [(r.addr, r.cookie) for r in v.recoveries] == [(ADDR, "auto 7")]
    assert "pid 9" in v.summary()


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "lock-only"])
def test_local_client_without_proof_is_refused(watch):
    assert decide_start(_facts(watch=watch, dead=False)).kind == safety.REFUSE


def test_no_recovery_without_membership():
    assert decide_start(_facts(known=False)).kind == safety.REFUSE


# ------------------------------------------------------------------ the agent, end to end

@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def _kill_qemu(w):
    """SIGKILL the QEMU of vm1: the process is gone, libvirt sees the domain shut off, and
    Ceph keeps its watches (until they time out) and its exclusive locks."""
    clients = w.qemu.pop(("node1", "vm1"))
    proc = w.procs.pop("vm1")
    proc.kill()
    proc.wait()
    w.node1.on_stop = None                     # Ceph is not told: the process just died
    w.node1.power_off(w.node1.guest("vm1"), 5)  # VIR_DOMAIN_SHUTOFF_CRASHED
    return clients


def test_killed_qemu_is_restarted_in_place(w):
    assert w.start() == 0, w.err
    dead = _kill_qemu(w)
    for spec, c in zip(GUARDED, dead):   # the lock and the lingering watch are still there
        img = w.ceph.image(spec)
        assert any(x["addr"] == c.addr for x in img.watchers)
        assert any(lk[2] == c.addr for lk in img.lockers)
    assert w.run("stop") == 0, w.err
    w.node1.on_stop = lambda g: w._qemu_exit(w.node1, g)
    assert w.start() == 0, w.err
    for c in dead:
        assert w.ceph.is_blocklisted(c.addr), c.addr
    broken = [(spec, owner) for spec in GUARDED for _, owner in w.ceph.image(spec).lock_breaks]
    assert sorted(broken) == sorted(zip(GUARDED, (c.addr for c in dead)))
    assert w.node1.running("vm1")
    assert "no longer runs" in w.logfile.read_text()


def test_live_process_is_never_taken_for_dead(w):
    """libvirt says shut off, but the recorded process (same pid, same start time) still
    runs: its clients may write; refused, nothing blocklisted."""
    assert w.start() == 0, w.err
    w.qemu.pop(("node1", "vm1"))
    proc = w.procs.pop("vm1")                  # keep the process alive
    try:
        w.node1.on_stop = None
        w.node1.power_off(w.node1.guest("vm1"), 5)
        assert w.start() == 1, w.err
        assert "not this domain" in w.reason or "this node" in w.reason, w.reason
        assert w.ceph.blocklist == {}
        assert not w.node1.running("vm1")
    finally:
        proc.kill()
        proc.wait()


def test_another_local_client_is_still_refused(w):
    """A writer on this node the record does not name (another process) is refused even
    when our previous QEMU is gone."""
    assert w.start() == 0, w.err
    _kill_qemu(w)
    stranger = w.holder("rbd/vm1-root", NODE1, lock=False)
    assert w.start() == 1, w.err
    assert stranger.addr in w.reason, w.reason
    assert not w.ceph.is_blocklisted(stranger.addr)


# ------------------------------------------------------------------ the stop releases them
# Chaos soak, CI run of stop 18 (seed 11, "qemu-kill"): Pacemaker recovered the killed vm2
# on other nodes, whose starts rightly refused the dead QEMU's clients (a live member's);
# only the node where that QEMU ran can prove it dead, so its stop releases them.

def _record(w):
    """The dead-clients record in the world's state directory ($HA_RSCTMP), decoded."""
    path = os.path.join(w.env()["HA_RSCTMP"], deadclients.state_name("vm1"))
    return deadclients.decode(open(path).read()) if os.path.exists(path) else None


def test_stop_releases_what_a_killed_qemu_left(w):
    assert w.start() == 0, w.err
    assert _record(w) is not None, "the start recorded no client instances"
    dead = _kill_qemu(w)
    assert w.run("stop") == 0, w.err
    for c in dead:
        assert w.ceph.is_blocklisted(c.addr), c.addr
    broken = [(spec, owner) for spec in GUARDED for _, owner in w.ceph.image(spec).lock_breaks]
    assert sorted(broken) == sorted(zip(GUARDED, (c.addr for c in dead)))
    for spec in GUARDED:
        assert not w.ceph.image(spec).lockers, spec
    assert _record(w) is None, "the record outlived its release"
    log = w.logfile.read_text()
    assert "no longer runs" in log and "released 2 client instance(s)" in log


def test_stop_never_releases_the_clients_of_a_live_process(w):
    """libvirt says shut off, the recorded QEMU (same pid, same start time) still runs:
    nothing released, and nothing attested dead through Pacemaker either."""
    store = _attrd(w)
    assert w.start() == 0, w.err
    w.qemu.pop(("node1", "vm1"))
    proc = w.procs.pop("vm1")
    try:
        w.node1.on_stop = None
        w.node1.power_off(w.node1.guest("vm1"), 5)
        assert w.run("stop") == 0, w.err
        assert w.ceph.blocklist == {}
        assert all(w.ceph.image(s).lockers and not w.ceph.image(s).lock_breaks
                   for s in GUARDED)
        assert _record(w) is not None
        assert store.read_text() == "" and w.bin.calls("attrd_updater") == []
    finally:
        proc.kill()
        proc.wait()


def test_stop_succeeds_without_ceph_and_keeps_the_record(w):
    """Stop never needs Ceph: without quorum the release gives up within its share, the
    stop succeeds, and the record stays for a restart on this node."""
    assert w.start() == 0, w.err
    dead = _kill_qemu(w)
    w.ceph.lose_quorum()
    assert w.run("stop") == 0, w.err
    assert w.ceph.blocklist == {}
    assert _record(w) is not None
    assert "cannot release the clients the dead QEMU left" in w.logfile.read_text()
    w.ceph.restore_quorum()
    w.node1.on_stop = lambda g: w._qemu_exit(w.node1, g)
    assert w.start() == 0, w.err                 # the restart here still recovers them
    assert all(w.ceph.is_blocklisted(c.addr) for c in dead)


def test_a_migrated_qemu_is_not_taken_for_a_dead_one(w):
    """After a live migration away, the source's stop finds its domain gone and its QEMU
    exited: a clean handover, so no Ceph session is opened on the migration's path and
    nothing is blocklisted."""
    from test_agent_flows import _pacemaker_tools
    _pacemaker_tools(w, "green")
    assert w.start() == 0, w.err
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0, w.err
    assert _record(w) is None
    sessions = len(w.ceph.sessions)
    assert w.run("stop") == 0, w.err
    assert len(w.ceph.sessions) == sessions
    assert w.ceph.blocklist == {}


# ------------------------------------------------------------------ leftovers, pure

def test_leftovers_names_only_the_dead_and_only_librbd_locks():
    dead_addr, live_addr = "10.0.0.1:0/11", "10.0.0.1:0/12"
    img = ImageFacts("rbd/a", True, lock_tag="internal",
                     watchers=(Watcher(dead_addr, 11, 5), Watcher(live_addr, 12, 6)),
                     lockers=(Locker("client.11", "auto 5", dead_addr),))
    (r,) = deadclients.leftovers({dead_addr}, [img], "node1", "gone")
    assert (r.image, r.addr, r.cookie, r.node) == ("rbd/a", dead_addr, "auto 5", "node1")
    # a lock without its watch (the watch timed out): still broken
    lock_only = img._replace(watchers=())
    (r,) = deadclients.leftovers({dead_addr}, [lock_only], "node1", "gone")
    assert r.cookie == "auto 5"
    # a lock that is not librbd's is never touched; an image not inspected neither
    foreign = img._replace(lock_tag="backup", watchers=())
    assert deadclients.leftovers({dead_addr}, [foreign], "node1", "gone") == []
    assert deadclients.leftovers({dead_addr}, [img._replace(error="timed out")], "n", "") == []
    assert deadclients.leftovers({live_addr + "x"}, [img], "node1", "gone") == []


def test_after_that_stop_another_node_starts_the_vm_at_once(w, monkeypatch):
    """The soak's case itself: Pacemaker moves the VM after its QEMU was killed. Node2
    cannot know that node1's client is dead; node1's stop said so to Ceph, so node2 finds
    nothing in the way (without the release it refuses: a writer on a live member)."""
    import fakes
    from test_agent_flows import NODE2
    assert w.start() == 0, w.err
    _kill_qemu(w)
    assert w.run("stop") == 0, w.err
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = NODE2
    assert w.run("start", meta={"on_node": "node2"}) == 0, w.err
    assert w.node2.running("vm1")
    for spec in GUARDED:
        img = w.ceph.image(spec)
        assert [x["addr"].split(":")[0] for x in img.watchers] == [NODE2], img.watchers


def test_a_stop_that_destroys_a_qemu_releases_what_it_left(w):
    """libvirt's destroy ends with SIGKILL for a QEMU that did not exit on SIGTERM: its
    watch lingers and its lock stays. The stop that destroyed it releases them."""
    assert w.start() == 0, w.err
    clients = list(w.qemu[("node1", "vm1")])

    def sigkilled(guest):                    # the process ends; Ceph is told nothing
        w.qemu.pop(("node1", "vm1"))
        proc = w.procs.pop("vm1")
        proc.kill()
        proc.wait()
    w.node1.on_stop = sigkilled
    assert w.run("stop", {"force_stop": "true"}) == 0, w.err
    assert w.node1.called("destroyFlags")
    for c in clients:
        assert w.ceph.is_blocklisted(c.addr), c.addr
    for spec in GUARDED:
        assert not w.ceph.image(spec).lockers and not w.ceph.image(spec).watchers, spec


def test_a_graceful_shutdown_opens_no_ceph_session(w):
    """The QEMU closed its images: the stop does not look for leftovers."""
    assert w.start() == 0, w.err
    sessions = len(w.ceph.sessions)
    assert w.run("stop") == 0, w.err
    assert not w.node1.called("destroyFlags")
    assert len(w.ceph.sessions) == sessions
    assert w.ceph.blocklist == {}


def test_the_record_exists_before_the_qemu_is_resumed(w):
    """An agent killed right after the resume (which takes the locks) must leave the
    proof behind: the record is written before it."""
    seen = []
    resume = w.node1.on_resume

    def check(guest):
        seen.append(_record(w))
        resume(guest)
    w.node1.on_resume = check
    assert w.start() == 0, w.err
    assert seen and seen[0] is not None, seen


def test_the_release_never_holds_the_stop(w, tmp_path):
    """Stop works with any configuration (issue 16): ceph_conf naming a FIFO blocks
    librados in its constructor for good (lab: the hostile stop of test_reliability waited
    out its whole timeout). The release gives up at its share; the stop succeeds."""
    import time
    assert w.start() == 0, w.err
    _kill_qemu(w)
    fifo = tmp_path / "ceph.fifo"
    os.mkfifo(fifo)
    try:
        t0 = time.monotonic()
        assert w.run("stop", {"ceph_conf": str(fifo)}) == 0, w.err
        took = time.monotonic() - t0
        # the share: a quarter of what the 20 s stop has left, at most 12 s
        assert took < 8.0, took
        assert "releasing a dead QEMU's clients" in w.logfile.read_text() or \
            "cannot release" in w.logfile.read_text()
        assert _record(w) is not None
    finally:
        try:   # a writer lets the abandoned reader thread finish
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:   # no reader left (ENXIO)
            pass


# ------------------------------------------------------------------ attested by its node
# Storage-only partition (lab, 2026-12-01, docs/fencing.md): corosync up, Ceph out of
# reach. Pacemaker stopped the VM on the cut node, whose stop destroyed the QEMU but could
# not release its clients; every start elsewhere refused the lock holder, a live member's,
# and the VM ran nowhere for more than 45 s. The node that ran the QEMU says, through
# Pacemaker, which of its instances are dead; the rule (safety table, (***)):
# - an instance of a member, unclean or maintenance node that THAT node attested dead:
#   recovered (only that instance);
# - attested by another node, or not attested: refused, as before;
# - the owner known only from name resolution, or two sources disagreeing: refused;
# - membership unreadable: refused.

OTHER = "10.0.0.2:0/4001"


def _remote_facts(state=safety.MEMBER, attested=(("node2", OTHER),), watch=False,
                  known=True, source="attribute", extra=()):
    watchers = (Watcher(OTHER, 4001, 8),) if watch else ()
    img = ImageFacts("rbd/vm1", True, watchers=watchers + tuple(extra),
                     lockers=(Locker("client.4001", "auto 8", OTHER),), lock_tag="internal")
    return Facts(True, "quorum a,b,c", (img,),
                 {"10.0.0.2": Owner("node2", state, source),
                  "10.0.0.1": Owner("node1", safety.LOCAL, "own")},
                 "node1", False, membership_known=known, dead_attested=frozenset(attested))


@pytest.mark.parametrize("state", [safety.MEMBER, safety.UNCLEAN, safety.MAINTENANCE])
@pytest.mark.parametrize("watch", [True, False], ids=["watch-lingers", "lock-only"])
def test_instance_attested_dead_by_its_own_node_is_recovered(state, watch):
    v = decide_start(_remote_facts(state=state, watch=watch))
    assert v.kind == safety.RECOVER_THEN_START, v.reasons
    assert [(r.addr, r.cookie, r.node) for r in v.recoveries] == [(OTHER, "auto 8", "node2")]
    assert "attested dead by node2" in v.recoveries[0].why


@pytest.mark.parametrize("case,facts", [
    ("not attested", dict(attested=())),
    ("attested by another node", dict(attested=(("node3", OTHER),))),
    ("another instance attested", dict(attested=(("node2", "10.0.0.2:0/4002"),))),
    ("membership unknown", dict(known=False)),
    ("owner from name resolution only", dict(source=safety.DNS_SOURCE)),
    ("address in conflict", dict(state=safety.CONFLICT)),
])
def test_without_the_owners_word_a_members_holder_is_refused(case, facts):
    v = decide_start(_remote_facts(**facts))
    assert v.kind == safety.REFUSE, (case, v)
    assert not v.recoveries


def test_the_word_covers_that_instance_only():
    """A second, live client of the same node on the image still blocks."""
    live = Watcher("10.0.0.2:0/4002", 4002, 9)
    v = decide_start(_remote_facts(extra=(live,)))
    assert v.kind == safety.REFUSE and "10.0.0.2:0/4002" in v.summary(), v


def test_attested_reads_every_nodes_attributes():
    from vmceph.cluster import NodeInfo
    nodes = {"node1": NodeInfo("node1", safety.MEMBER, {
                 "vmceph-dead-vm1": "10.0.0.1:0/11 10.0.0.1:0/12",
                 "vmceph-dead-vm2": "10.0.0.1:0/13", "vmceph-ceph-addrs": "10.0.0.1"}),
             "node2": NodeInfo("node2", safety.MEMBER, {"vmceph-dead-vm1": ""})}
    assert deadclients.attested(nodes) == {("node1", "10.0.0.1:0/11"),
                                           ("node1", "10.0.0.1:0/12"),
                                           ("node1", "10.0.0.1:0/13")}
    assert deadclients.attested({}) == frozenset()
    assert deadclients.attest_name("vm:1 x") == "vmceph-dead-vm_1_x"


def _attrd(w):
    """attrd_updater that keeps what it is told (transient attributes of node1) in a file;
    crm_mon shows the three nodes online with those attributes."""
    store = w.tmp / "attrd"
    store.write_text("")
    w.bin.add("attrd_updater", """store=%s
name=$2; op=$3; value=$4
grep -v "^$name=" "$store" > "$store.new"; mv "$store.new" "$store"
[ "$op" = -U ] && echo "$name=$value" >> "$store"
exit 0""" % store)
    return store


def _crm_mon(w, store):
    w.bin.add("crm_mon", """echo '<pacemaker-result api-version="2.25"><nodes>'
for n in 1 2 3; do echo "<node name=\\"node$n\\" id=\\"$n\\" online=\\"true\\" standby=\\"false\\" maintenance=\\"false\\" pending=\\"false\\" unclean=\\"false\\" shutdown=\\"false\\" expected_up=\\"true\\" type=\\"member\\"/>"; done
echo '</nodes><node_attributes><node name="node1">'
while IFS== read -r k v; do [ -n "$k" ] && echo "<attribute name=\\"$k\\" value=\\"$v\\"/>"; done < %s
echo '</node></node_attributes><status code="0" message="OK"/></pacemaker-result>'
""" % store)
    w.params["membership"] = ""


def test_a_stop_without_ceph_attests_the_dead_clients_and_another_node_recovers_them(
        w, monkeypatch):
    """The storage-only cut, in the fakes: node1's stop cannot reach Ceph; it says which
    instances are dead; node2's start recovers exactly those and starts."""
    import fakes
    from test_agent_flows import NODE2
    store = _attrd(w)
    assert w.start() == 0, w.err
    dead = _kill_qemu(w)
    w.ceph.lose_quorum()
    assert w.run("stop") == 0, w.err
    assert _record(w) is not None
    said = dict(line.split("=", 1) for line in store.read_text().split("\n") if line)
    assert said == {"vmceph-dead-vm1": " ".join(sorted(c.addr for c in dead))}, said
    w.ceph.restore_quorum()
    # node2 cannot reach node1's QEMU, and node1 is a live member: without the word it
    # refuses (shown first), with it it recovers those instances and starts
    _crm_mon(w, store)
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = NODE2
    saved = store.read_text()
    store.write_text("")
    assert w.run("start", meta={"on_node": "node2"}) == 1, w.err
    assert "a live cluster member" in w.reason, w.reason
    assert w.ceph.blocklist == {}
    store.write_text(saved)
    assert w.run("start", meta={"on_node": "node2"}) == 0, w.err
    assert w.node2.running("vm1")
    for c in dead:
        assert w.ceph.is_blocklisted(c.addr), c.addr
    assert "attested dead by node1" in w.logfile.read_text()


def test_a_stop_that_releases_them_itself_withdraws_its_word(w):
    store = _attrd(w)
    assert w.start() == 0, w.err
    _kill_qemu(w)
    assert w.run("stop") == 0, w.err
    assert _record(w) is None
    assert store.read_text() == ""
    ops = [c[1:5] for c in w.bin.calls("attrd_updater")]
    assert [o[2] for o in ops] == ["-U", "-D"], ops


def test_migrate_from_records_the_arrived_qemus_clients(w, monkeypatch):
    """A QEMU that arrived by live migration was not started here: without a record, a
    stop that later finds it dead could release nothing (and, Ceph out of reach, attest
    nothing). migrate_from records the watchers at this node's address, with the pid."""
    import fakes
    from vmceph import virt
    from test_agent_flows import NODE2, _pacemaker_tools
    _pacemaker_tools(w, "green")
    assert w.start() == 0, w.err
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0, w.err
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = NODE2
    arrived = subprocess.Popen(["sleep", "300"])        # stands for node2's QEMU
    try:
        monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: arrived.pid)
        assert w.run("migrate_from", meta={"migrate_source": "node1",
                                           "on_node": "node2"}) == 0, w.err
        rec = _record(w)
        assert rec is not None, "migrate_from recorded nothing"
        pid, _start, clients = rec[:3]
        watchers = {(spec, x["addr"]) for spec in GUARDED
                    for x in w.ceph.image(spec).watchers}
        assert pid == arrived.pid
        assert set(clients) == watchers and all(a.startswith(NODE2 + ":") for _, a in clients)
    finally:
        arrived.kill()
        arrived.wait()


def test_a_start_that_finds_its_qemu_running_records_its_clients(w):
    """seed 1206, faults 159-160: an agent killed in migrate_to left libvirt to finish the
    migration; Pacemaker then started the VM on the target, where the start found it
    running ("already-running"). That QEMU had no record (no start made it, no
    migrate_from ran): when it was killed, its stop released nothing and every start
    refused its lock. The start that finds it running records it."""
    assert w.start() == 0, w.err
    os.remove(os.path.join(w.env()["HA_RSCTMP"], deadclients.state_name("vm1")))
    assert _record(w) is None
    assert w.start() == 0, w.err
    assert "already-running" in w.logfile.read_text()
    rec = _record(w)
    assert rec is not None, "the start that found the QEMU running recorded nothing"
    watchers = {(spec, x["addr"]) for spec in GUARDED for x in w.ceph.image(spec).watchers}
    assert set(rec[2]) == watchers
    dead = _kill_qemu(w)
    assert w.run("stop") == 0, w.err
    for c in dead:
        assert w.ceph.is_blocklisted(c.addr), c.addr
    for spec in GUARDED:
        assert not w.ceph.image(spec).lockers, spec


def test_running_qemu_clients_names_one_local_watcher_per_image_or_none():
    from vmceph.rbdvd import running_qemu_clients
    local, other = "10.0.0.1", "10.0.0.2"
    owners = {local: Owner("node1", safety.LOCAL), other: Owner("node2", safety.MEMBER)}

    class Dom:
        guarded_disks = ()
    imgs = (ImageFacts("rbd/a", watchers=(Watcher(local + ":0/1", 1, 1),
                                          Watcher(other + ":0/2", 2, 2))),
            ImageFacts("rbd/b", watchers=(Watcher(local + ":0/3", 3, 3),
                                          Watcher(local + ":0/4", 4, 4))),   # who is who?
            ImageFacts("rbd/c", error="timed out"),
            ImageFacts("rbd/d"))
    f = Facts(quorum_ok=True, quorum_detail="", images=imgs, owners=owners,
              local_node="node1", domain_active_here=True)
    assert running_qemu_clients(Dom(), f) == [("rbd/a", local + ":0/1")]


# ------------------------------------------------------------------ after a reboot
# Chaos soak seed 1208, fault 58 (and seed 1205, fault 14): node2 was power-fenced in the
# middle of a migration and booted again; the lock its dead QEMU held was then refused on
# node2 ("a lock holder with no watch on this node") and on the others ("a live cluster
# member") until an operator removed it. The state directory is a tmpfs: the reboot had
# taken the record with it. The copy in RECORD_DIR carries the boot id: a record of an
# earlier boot names clients that are dead for certain.

def _reboot(w, monkeypatch):
    """Power node1 off and on: its QEMU dies with everything else (Ceph keeps the lock and,
    for up to 30 s, the watch), the state directory (a tmpfs) is empty again, and the
    kernel has a new boot id. RECORD_DIR is on disk: it stays."""
    import shutil
    dead = _kill_qemu(w)
    shutil.rmtree(w.env()["HA_RSCTMP"])
    os.makedirs(w.env()["HA_RSCTMP"])
    monkeypatch.setattr(deadclients, "boot_id", lambda path=None: "11111111-2222-3333-4444-"
                                                                  "555555555555")
    return dead


def test_after_a_reboot_the_start_here_recovers_what_the_earlier_boot_left(w, monkeypatch):
    assert w.start() == 0, w.err
    dead = _reboot(w, monkeypatch)
    w.node1.on_stop = lambda g: w._qemu_exit(w.node1, g)
    assert w.start() == 0, w.err
    for c in dead:
        assert w.ceph.is_blocklisted(c.addr), c.addr
    assert w.node1.running("vm1")
    assert "before the node rebooted" in w.logfile.read_text()


def test_after_a_reboot_without_the_copy_the_start_here_refuses(w, monkeypatch):
    """The copy is the proof: without it (or with another node's) nothing is recovered."""
    assert w.start() == 0, w.err
    copy = os.path.join(deadclients.RECORD_DIR, deadclients.state_name("vm1"))
    text = open(copy).read()
    assert "boot=" in text and "node=node1" in text, text
    _reboot(w, monkeypatch)
    os.unlink(copy)
    assert w.start() == 1, w.err
    assert w.ceph.blocklist == {}
    with open(copy, "w") as f:
        f.write(text.replace("node=node1", "node=node2"))
    assert w.start() == 1, w.err
    assert w.ceph.blocklist == {}


def test_after_a_reboot_the_first_probe_attests_and_another_node_recovers(w, monkeypatch):
    import fakes
    from test_agent_flows import NODE2
    store = _attrd(w)
    assert w.start() == 0, w.err
    dead = _reboot(w, monkeypatch)
    assert w.run("monitor", interval=0) == ocf.OCF_NOT_RUNNING, w.err
    said = dict(line.split("=", 1) for line in store.read_text().split("\n") if line)
    assert said == {"vmceph-dead-vm1": " ".join(sorted(c.addr for c in dead))}, said
    assert w.run("monitor", interval=10000) == ocf.OCF_NOT_RUNNING   # only a probe says it
    _crm_mon(w, store)
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = NODE2
    assert w.run("start", meta={"on_node": "node2"}) == 0, w.err
    assert w.node2.running("vm1")
    for c in dead:
        assert w.ceph.is_blocklisted(c.addr), c.addr


def test_a_probe_of_this_boot_attests_nothing(w, monkeypatch):
    """No reboot: the QEMU was killed, the record is this boot's; a probe says nothing
    (the stop, which Pacemaker runs next, releases or attests)."""
    store = _attrd(w)
    assert w.start() == 0, w.err
    _kill_qemu(w)
    assert w.run("monitor", interval=0) == ocf.OCF_NOT_RUNNING, w.err
    assert store.read_text() == "" and w.bin.calls("attrd_updater") == []
