"""RBDVirtualDomain's actions end to end through ocf.run, on fake Ceph, libvirt and
Pacemaker tools.

The fakes are injected as the modules ``rados``, ``rbd`` and ``libvirt`` (sys.modules): the
agent's own lazy imports pick them up, so every line of the real code path runs (validation,
facts.gather, the decision, recovery, libvirt calls). Cluster membership comes from the
``membership`` and ``node_addresses`` parameters, or from stub crm_mon/attrd_updater
programs first on PATH; name resolution is stubbed (no DNS in a unit test).

A started domain's QEMU opens its guarded images read-write and writes (a watch and the
exclusive lock from this node's address), and drops them when it stops: so the Ceph state
the next action sees is the one a real QEMU would leave.
"""

import io
import subprocess
import time

import pytest

import fakes
from vmceph import cluster, migration, ocf, stopseq, virt
from vmceph.ocf import ConfigError, Params
from vmceph.migration import migration_args, parse_migrate_options
from vmceph.rbdvd import RBDVirtualDomain
from vmceph.rbdvd_params import SPEC

VIR = fakes.real_libvirt
NODE1, NODE2, NODE3 = "10.252.0.1", "10.252.0.2", "10.252.0.3"
GUARDED = ("rbd/vm1-root", "rbd/tenant1/vm1-data")


class World:
    """node1 (this node) and node2 as libvirt hosts, one Ceph cluster, stub tools."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        self.timeline = []
        self.ceph = fakes.FakeCeph(client_ip=NODE1, timeline=self.timeline)
        for spec in GUARDED + ("rbd/golden-iso",):
            self.ceph.add_image(spec)
        self.hosts = {}
        self.node1 = fakes.FakeLibvirt("node1", self.hosts, self.timeline)
        self.node2 = fakes.FakeLibvirt("node2", self.hosts, self.timeline)
        self.qemu = {}                     # (host, domain) -> [Client]
        for host, ip in ((self.node1, NODE1), (self.node2, NODE2)):
            host.on_create = lambda g, h=host, ip=ip: self._qemu_start(h, g, ip)
            host.on_stop = lambda g, h=host: self._qemu_exit(h, g)
            host.on_resume = lambda g, h=host: self._qemu_first_write(h, g)
        self.node1.on_migrate = lambda g, dest: self._qemu_start(dest, g, NODE2)
        fakes.install(monkeypatch, self.ceph, self.node1)
        monkeypatch.setattr(cluster, "resolve", lambda name, timeout: [])
        self.bin = fakes.StubBin(tmp_path / "bin", monkeypatch)
        self.bin.add("crm_resource")
        self.config = tmp_path / "vm1.xml"
        self.config.write_text(fakes.domain_xml())
        self.ceph_conf = tmp_path / "ceph.conf"
        self.ceph_conf.write_text("[global]\nmon_host = %s\n" % NODE1)
        self.params = {
            "config": str(self.config),
            "ceph_conf": str(self.ceph_conf),
            "ceph_user": "vmceph",
            "membership": "node1=member node2=member node3=member",
            "node_addresses": "node1=%s node2=%s node3=%s" % (NODE1, NODE2, NODE3),
        }
        self.meta = {"on_node": "node1", "timeout": "20000"}
        self.err = ""
        self.logfile = tmp_path / "ha.log"
        self.procs = {}
        monkeypatch.setattr(virt, "qemu_pid_of", self.qemu_pid_of)

    def qemu_pid_of(self, name, run_dir=None):
        """What the agent finds when it looks for a QEMU process itself (libvirtd down): a
        real child process stands for the QEMU of each domain the fake host runs; when the
        agent kills it, the domain is gone from the host too."""
        if not self.node1.running(name):
            return None
        p = self.procs.get(name)
        if p is None:
            p = self.procs[name] = subprocess.Popen(["sleep", "300"])
        if p.poll() is not None:
            self.node1.power_off(self.node1.guest(name), VIR.VIR_DOMAIN_SHUTOFF_DESTROYED)
            return None
        return p.pid

    def close(self):
        self.ceph.close()
        for p in self.procs.values():
            p.kill()
            p.wait()

    def _qemu_start(self, host, guest, ip):
        # a paused QEMU has its images open (a watch) but has not written (no lock yet)
        running = guest.state != VIR.VIR_DOMAIN_PAUSED
        self.qemu[(host.hostname, guest.name)] = [self.ceph.qemu_writes(spec, ip, lock=running)
                                                  for spec in GUARDED]

    def _qemu_first_write(self, host, guest):
        for spec, client in zip(GUARDED, self.qemu.get((host.hostname, guest.name), [])):
            w = next(x for x in self.ceph.image(spec).watchers if x["addr"] == client.addr)
            self.ceph.image(spec).lockers = [(client.entity, "auto %d" % w["cookie"],
                                              client.addr)]

    def _qemu_exit(self, host, guest):
        for client in self.qemu.pop((host.hostname, guest.name), []):
            self.ceph.expire_watches(client.addr)
            for spec in GUARDED:
                img = self.ceph.image(spec)
                img.lockers = [lk for lk in img.lockers if lk[2] != client.addr]

    def env(self, params=None, meta=None, interval=None, depth=None):
        env = {"OCF_RESOURCE_INSTANCE": "vm1", "HA_RSCTMP": str(self.tmp / "rsctmp"),
               "HA_LOGFILE": str(self.logfile), "HA_debug": "1"}
        p = dict(self.params, **(params or {}))
        env.update(("OCF_RESKEY_" + k, v) for k, v in p.items() if v is not None)
        m = dict(self.meta, **(meta or {}))
        env.update(("OCF_RESKEY_CRM_meta_" + k, v) for k, v in m.items() if v is not None)
        if interval is not None:
            env["OCF_RESKEY_CRM_meta_interval"] = str(interval)
        if depth is not None:
            env["OCF_CHECK_LEVEL"] = str(depth)
        return env

    def run(self, action, params=None, meta=None, interval=None, depth=None):
        out, err = io.StringIO(), io.StringIO()
        rc = ocf.run(RBDVirtualDomain(), ["RBDVirtualDomain", action],
                     self.env(params, meta, interval, depth), out, err)
        self.err = err.getvalue()
        return rc

    @property
    def reason(self):
        lines = [ln for ln in self.err.splitlines() if ln.startswith("ocf-exit-reason:")]
        return lines[-1][len("ocf-exit-reason:"):] if lines else None

    def start(self, **params):
        return self.run("start", params)

    def holder(self, spec, ip, lock=True):
        return self.ceph.qemu_writes(spec, ip, lock=lock)

    def libvirt_events(self):
        return [e[1] for e in self.timeline if e[0].startswith("libvirt")]


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


# ----------------------------------------------------------------------------- start

def test_start_with_no_writers_starts_the_domain(w):
    assert w.start() == 0, w.err
    assert w.node1.running("vm1")
    created = w.node1.called("createXML")
    assert [c[1] for c in created] == ["vm1"]
    assert w.node1.guest("vm1").xml == w.config.read_text()
    assert w.ceph.blocklist == {} and all(w.ceph.image(s).lock_breaks == [] for s in GUARDED)
    # the new QEMU is the one writer of each guarded image; the read-only disk is untouched
    for spec in GUARDED:
        assert [x["addr"].split(":")[0] for x in w.ceph.image(spec).watchers] == [NODE1]
    assert w.ceph.image("rbd/golden-iso").watchers == []
    assert "start decision for vm1: start" in w.logfile.read_text()
    # identity remembered for stop/monitor, Ceph session closed
    assert (w.tmp / "rsctmp" / "vmceph-RBDVirtualDomain-vm1.state").read_text().startswith(
        "name=vm1\nuuid=8a5b3c2d-")
    assert all(r.state == "shutdown" for r in w.ceph.sessions)


def test_start_sets_utilization(w):
    assert w.start() == 0
    assert sorted(w.bin.calls("crm_resource")) == sorted([
        ["crm_resource", "-r", "vm1", "-z", "-p", "cpu", "-v", "2"],
        ["crm_resource", "-r", "vm1", "-z", "-p", "host_memory", "-v", "1024"],
        ["crm_resource", "-r", "vm1", "-z", "-p", "hv_memory", "-v", "1024"]])


def test_start_unset_utilization(w):
    assert w.start(unset_utilization_cpu="true", autoset_utilization_hv_memory="false") == 0
    calls = w.bin.calls("crm_resource")
    assert ["crm_resource", "-r", "vm1", "-z", "-d", "cpu"] in calls
    assert not any("hv_memory" in c for c in calls)


def test_start_refused_when_a_live_member_writes(w):
    qemu = w.holder("rbd/vm1-root", NODE2)
    assert w.start() == ocf.OCF_ERR_GENERIC
    reason = w.reason
    for fact in ("rbd/vm1-root", qemu.entity, qemu.addr, "node2", "live cluster member"):
        assert fact in reason, fact
    assert not w.node1.called("createXML")
    assert w.ceph.blocklist == {}
    assert w.ceph.image("rbd/vm1-root").lockers[0][0] == qemu.entity


def test_start_refused_while_the_writers_node_is_unclean(w):
    w.holder("rbd/vm1-root", NODE2)
    assert w.start(membership="node1=member node2=unclean") == 1
    assert "not yet fenced" in w.reason and "node2" in w.reason
    assert w.ceph.blocklist == {} and not w.node1.called("createXML")


def test_start_after_the_holders_node_is_fenced_recovers_then_starts(w):
    qemu = w.holder("rbd/vm1-root", NODE2)          # its watch lingers after the fence
    t0 = time.time()
    assert w.start(membership="node1=member node2=fenced", blocklist_expire="600") == 0, w.err
    bl = [c for c in w.ceph.commands if c.get("blocklistop") == "add"]
    assert bl == [{"prefix": "osd blocklist", "blocklistop": "add", "addr": qemu.addr,
                   "expire": 600.0}]             # as librados' blocklist_add sends it
    assert t0 + 590 < w.ceph.blocklist[qemu.addr] < time.time() + 610
    assert w.ceph.image("rbd/vm1-root").lock_breaks == [(0, qemu.addr)]
    # order: blocklist, then break the lock, then start the domain
    order = [e[1] for e in w.timeline if e[1] in ("blocklist add", "lock_break", "createXML")]
    assert order == ["blocklist add", "lock_break", "createXML"]
    assert w.node1.running("vm1")
    log = w.logfile.read_text()
    assert "WARNING: blocklisted %s for 600 s in " % qemu.addr in log
    assert "broke the exclusive lock of rbd/vm1-root held by %s at %s (node node2)" % (
        qemu.entity, qemu.addr) in log


def test_start_refuses_a_lock_holder_without_a_watch_on_a_live_member(w, monkeypatch):
    """issue 10: a holder whose watch is missing on a live member may be a running QEMU
    between two watches (OSD failover, network blip): never blocklisted; the start looks
    again within the deadline, then refuses and says so."""
    from vmceph import facts as facts_mod
    monkeypatch.setattr(facts_mod, "WATCHLESS_RETRY_CAP_S", 1.5)
    qemu = w.holder("rbd/vm1-root", NODE2)
    w.ceph.expire_watches(qemu.addr)
    assert w.start() == 1, w.err
    assert "no watch" in w.reason and "live cluster member" in w.reason
    assert "none did while looking again for" in w.reason
    assert w.ceph.blocklist == {} and w.ceph.image("rbd/vm1-root").lock_breaks == []
    assert not w.node1.running("vm1")
    assert "looking again" in w.logfile.read_text()


def test_start_recovers_a_lock_holder_without_a_watch_on_a_fenced_node(w):
    qemu = w.holder("rbd/vm1-root", NODE2)
    w.ceph.expire_watches(qemu.addr)
    assert w.start(membership="node1=member node2=fenced") == 0, w.err
    assert w.ceph.is_blocklisted(qemu.addr)
    assert w.ceph.image("rbd/vm1-root").lock_breaks == [(0, qemu.addr)]
    assert w.ceph.unsafe_breaks == []
    assert w.node1.running("vm1")


def test_start_fenced_watcher_without_lock_is_only_blocklisted(w):
    qemu = w.holder("rbd/tenant1/vm1-data", NODE2, lock=False)
    assert w.start(membership="node1=member node2=fenced") == 0
    assert w.ceph.is_blocklisted(qemu.addr)
    assert w.ceph.image("rbd/tenant1/vm1-data").lock_breaks == []


def test_start_refuses_an_unknown_writer_by_default(w):
    w.holder("rbd/vm1-root", "192.0.2.77")
    assert w.start() == 1
    assert "192.0.2.77" in w.reason and "unknown_client_policy=blocklist" in w.reason
    assert w.ceph.blocklist == {}


def test_start_blocklists_an_unknown_writer_when_the_policy_says_so(w):
    qemu = w.holder("rbd/vm1-root", "192.0.2.77")
    assert w.start(unknown_client_policy="blocklist") == 0
    assert w.ceph.is_blocklisted(qemu.addr) and w.node1.running("vm1")


def test_start_refused_when_another_process_on_this_node_writes(w):
    w.holder("rbd/vm1-root", NODE1)                  # e.g. 'rbd map' or a stray QEMU
    assert w.start() == 1
    assert "open read-write on this node" in w.reason and "not this domain" in w.reason


def test_start_is_idempotent(w):
    assert w.start() == 0
    assert w.start() == 0, w.err
    assert len(w.node1.called("createXML")) == 1
    assert "already-running" in w.logfile.read_text()
    assert w.ceph.blocklist == {}


def test_start_removes_an_inactive_persistent_definition(w):
    w.node1.add_guest("vm1", uuid="8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", running=False,
                      persistent=True)
    assert w.start() == 0
    assert w.node1.called("undefine") and w.node1.running("vm1")
    assert not w.node1.guest("vm1").persistent


def test_start_with_quorum_lost_fails_and_stop_still_works(w):
    w.ceph.lose_quorum()
    assert w.start() == ocf.OCF_ERR_GENERIC
    assert "quorum" in w.reason and "s spent" in w.reason
    assert not w.node1.called("createXML")
    # the domain runs here anyway (started before the quorum loss): stop needs no Ceph
    w.node1.add_guest("vm1", uuid="8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d")
    sessions = len(w.ceph.sessions)
    assert w.run("stop") == 0, w.err
    assert not w.node1.running("vm1")
    assert len(w.ceph.sessions) == sessions


def test_start_missing_image_is_a_configuration_error(w):
    del w.ceph.pools["rbd"][("tenant1", "vm1-data")]
    assert w.start() == ocf.OCF_ERR_CONFIGURED
    assert "rbd/tenant1/vm1-data does not exist" in w.reason


def test_start_without_permission_is_a_permission_error(w):
    w.ceph.deny_pool("rbd")
    assert w.start() == ocf.OCF_ERR_PERM
    assert "permission denied" in w.reason and "rbd/vm1-root" in w.reason


def test_start_without_monitor_caps_is_a_permission_error(w):
    w.ceph.caps = "none"
    assert w.start() == ocf.OCF_ERR_PERM
    assert "access denied" in w.reason and not w.node1.called("createXML")


def test_start_recovery_refused_by_the_caps(w, monkeypatch):
    """mon 'profile rbd' may add blocklist entries; a user that may not cannot recover a
    dead client's image: the start fails as a permission problem and starts nothing."""
    qemu = w.holder("rbd/vm1-root", NODE2)
    original = w.ceph._blocklist
    monkeypatch.setattr(w.ceph, "_blocklist", lambda cmd: (-13, b"", "access denied")
                        if cmd.get("blocklistop") == "add" else original(cmd))
    assert w.start(membership="node1=member node2=fenced") == ocf.OCF_ERR_PERM
    assert "profile rbd" in w.reason
    assert w.ceph.image("rbd/vm1-root").lock_breaks == [] and not w.node1.called("createXML")
    assert qemu.addr not in w.ceph.blocklist


def test_start_with_refused_credentials(w):
    w.ceph.auth_ok = False
    assert w.start() == ocf.OCF_ERR_PERM
    assert "client.vmceph" in w.reason


def test_start_with_libvirt_down_fails_without_touching_ceph(w):
    w.node1.reachable = False
    assert w.start() == 1
    assert "libvirt" in w.reason and w.ceph.sessions == []


@pytest.mark.parametrize("params,code,fragment", [
    ({"stateless": "true"}, 6, "stateless"),
    ({"snapshot": "/var/lib/vmceph/snap", "force_stop": "true"}, 6, "exclude each other"),
    ({"migrate_options": "--live --bogus"}, 6, "'--bogus' is not supported"),
    ({"membership": "node1=alive"}, 6, "membership entry"),
    ({"node_addresses": "node2"}, 6, "node_addresses entry"),
    ({"shutdown_mode": "acpi,reboot"}, 6, "unknown shutdown mode 'reboot'"),
    ({"ceph_conf": "/nonexistent/ceph.conf"}, 5,
     "ceph_conf='/nonexistent/ceph.conf': does not exist on this node"),
])
def test_validate_all_refusals(w, params, code, fragment):
    assert w.run("validate-all", params) == code
    assert fragment in w.reason


def test_validate_all_accepts_the_defaults_and_comma_separated_shutdown_modes(w):
    assert w.run("validate-all") == 0, w.err
    assert w.run("validate-all", {"shutdown_mode": "acpi,agent"}) == 0, w.err


def test_validate_all_config_not_xml(w):
    w.config.write_text("<domain><name>vm1</name>")
    assert w.run("validate-all") == ocf.OCF_ERR_INSTALLED   # this node's file (test_parity)
    assert "not well-formed" in w.reason


# ----------------------------------------------------------------------------- monitor

def test_monitor_running_and_stopped(w):
    assert w.run("monitor") == ocf.OCF_NOT_RUNNING            # probe, nothing here
    assert w.start() == 0
    assert w.run("monitor") == 0
    assert w.run("monitor", interval=10000) == 0
    w.node1.power_off(w.node1.guest("vm1"), VIR.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    assert w.run("monitor", interval=10000) == ocf.OCF_NOT_RUNNING


def test_monitor_paused_on_io_error_fails(w):
    assert w.start() == 0
    g = w.node1.guest("vm1")
    g.state, g.reason = VIR.VIR_DOMAIN_PAUSED, VIR.VIR_DOMAIN_PAUSED_IOERROR
    assert w.run("monitor", interval=10000) == 1
    assert "paused on an I/O error" in w.reason


def test_monitor_paused_for_migration_is_running(w):
    assert w.start() == 0
    g = w.node1.guest("vm1")
    g.state, g.reason = VIR.VIR_DOMAIN_PAUSED, VIR.VIR_DOMAIN_PAUSED_MIGRATION
    assert w.run("monitor", interval=10000) == 0


def test_monitor_depth0_asks_libvirt_only(w):
    assert w.start() == 0
    sessions = len(w.ceph.sessions)
    assert w.run("monitor", interval=10000) == 0
    assert len(w.ceph.sessions) == sessions


HOT_PATH = """
import io, json, sys
from vmceph import ocf
from vmceph.rbdvd import RBDVirtualDomain
env = json.loads(sys.argv[1])
rcs = [ocf.run(RBDVirtualDomain(), ["RBDVirtualDomain", "monitor"], dict(env, **extra),
               io.StringIO(), io.StringIO())
       for extra in ({}, {"OCF_RESKEY_CRM_meta_interval": "10000"})]
print(json.dumps({"rcs": rcs, "loaded": sorted(m for m in ("rados", "rbd", "lxml", "lxml.etree",
                                                          "vmceph.ceph", "vmceph.safety")
                                               if m in sys.modules)}))
"""


def test_monitor_hot_path_imports_no_ceph_and_no_lxml(tmp_path):
    """The monitor at depth 0 imports no rados, rbd or lxml. Run in a fresh
    interpreter, against libvirt's in-process test driver (its domain 'test' runs)."""
    import json
    import sys
    from pathlib import Path
    state = tmp_path / "vmceph-RBDVirtualDomain-vm1.state"
    state.write_text("name=test\nuuid=6695eb01-f6a4-8304-79aa-97f2502e193f\nconfig=\n")
    env = {"OCF_RESOURCE_INSTANCE": "vm1", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_config": str(tmp_path / "not-mounted" / "vm1.xml"),
           "OCF_RESKEY_hypervisor": "test:///default"}
    lib = str(Path(__file__).resolve().parents[2] / "lib")
    r = subprocess.run([sys.executable, "-c", HOT_PATH, json.dumps(env)], capture_output=True,
                       text=True, timeout=60, env={"PYTHONPATH": lib, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rcs"] == [0, 0]
    assert out["loaded"] == []


def test_recurring_monitor_with_libvirt_unreachable_fails(w, monkeypatch):
    assert w.start() == 0
    w.node1.reachable = False
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: None)
    assert w.run("monitor", interval=10000) == ocf.OCF_ERR_GENERIC
    assert "libvirt unreachable, state of domain vm1 unknown" in w.reason


def test_probe_with_libvirt_unreachable_looks_for_the_qemu_process(w, monkeypatch):
    assert w.start() == 0
    w.node1.reachable = False
    looked = []
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: looked.append(name))
    assert w.run("monitor") == ocf.OCF_NOT_RUNNING
    assert looked == ["vm1"]
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: 4242)
    assert w.run("monitor") == 0


@pytest.mark.parametrize("breakage", ["unreachable", "config-missing", "connection-drops"])
def test_recurring_monitor_never_answers_not_running_on_a_guess(w, monkeypatch, breakage):
    assert w.start() == 0
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: None)
    if breakage == "unreachable":
        w.node1.reachable = False
    elif breakage == "config-missing":
        w.config.unlink()
        w.node1.reachable = False
    else:
        def lost(self, flags=0):
            raise fakes.connection_lost()
        monkeypatch.setattr(fakes.Domain, "state", lost)
    rc = w.run("monitor", interval=10000)
    assert rc != ocf.OCF_NOT_RUNNING and rc == ocf.OCF_ERR_GENERIC


def test_monitor_finds_the_domain_without_its_config(w):
    """The config file vanished (unmounted shared storage): the remembered identity still
    finds the running domain, so a recurring monitor does not report it stopped."""
    assert w.start() == 0
    w.config.unlink()
    assert w.run("monitor", interval=10000) == 0
    assert w.run("monitor") == 0


def test_deep_monitor_reports_split_brain(w):
    assert w.start() == 0
    assert w.run("monitor", interval=10000, depth=20) == 0, w.err
    intruder = w.holder("rbd/vm1-root", NODE2, lock=False)
    assert w.run("monitor", interval=10000, depth=20) == 1
    assert "SPLIT BRAIN" in w.reason and intruder.addr in w.reason and "node2" in w.reason


def test_deep_monitor_depth10_checks_quorum(w):
    assert w.start() == 0
    assert w.run("monitor", interval=10000, depth=10) == 0
    w.ceph.lose_quorum()
    # issue 10: a quorum blip must not restart every VM: success, with a warning
    assert w.run("monitor", interval=10000, depth=10) == 0
    assert "deep monitor cannot check Ceph" in w.logfile.read_text()
    assert w.run("monitor", interval=10000, depth=20) == 0
    assert "cannot check the writers" in w.logfile.read_text()


def test_deep_monitor_detects_a_blocklisted_qemu(w):
    assert w.start() == 0
    client = w.qemu[("node1", "vm1")][0]
    w.ceph.expire_watches(client.addr)             # its watch is gone: QEMU lost Ceph
    assert w.run("monitor", interval=10000, depth=20) == 1
    assert "no writer on this node" in w.reason


# ----------------------------------------------------------------------------- stop

def test_stop_graceful(w):
    assert w.start() == 0
    assert w.run("stop") == 0, w.err
    assert not w.node1.running("vm1")
    assert [c[2] for c in w.node1.called("shutdownFlags")] == [(0,)]
    assert not w.node1.called("destroyFlags")
    assert not (w.tmp / "rsctmp" / "vmceph-RBDVirtualDomain-vm1.state").exists()


def test_stop_graceful_then_destroy_at_the_deadline(w):
    assert w.start() == 0
    w.node1.guest("vm1").acpi = "ignore"           # a guest with no OS (docs/ceph-facts.md)
    assert w.run("stop", meta={"timeout": "2000"}) == 0, w.err
    events = [e for e in w.libvirt_events() if e in ("shutdownFlags", "destroyFlags")]
    assert events == ["shutdownFlags", "destroyFlags"]
    assert not w.node1.running("vm1")
    assert "did not shut down within" in w.logfile.read_text()


def test_stop_destroys_an_incoming_domain_of_a_failed_migration_at_once(w):
    """The target's side of a migration that failed: paused with reason "migration", its
    guest never ran here and answers no shutdown; Pacemaker stops it after the failed
    migrate_to. Destroyed at once, not after 2/3 of the stop's timeout (seed 1205)."""
    assert w.start() == 0
    g = w.node1.guest("vm1")
    g.state, g.reason = VIR.VIR_DOMAIN_PAUSED, VIR.VIR_DOMAIN_PAUSED_MIGRATION
    g.acpi = "ignore"
    t0 = time.monotonic()
    assert w.run("stop", meta={"timeout": "30000"}) == 0, w.err
    assert time.monotonic() - t0 < 5.0
    assert not w.node1.called("shutdownFlags") and w.node1.called("destroyFlags")
    assert not w.node1.running("vm1")
    assert "paused for a migration" in w.logfile.read_text()


def test_a_domain_paused_by_the_user_is_still_asked_to_shut_down(w):
    assert w.start() == 0
    g = w.node1.guest("vm1")
    g.state, g.reason = VIR.VIR_DOMAIN_PAUSED, VIR.VIR_DOMAIN_PAUSED_USER
    assert w.run("stop", meta={"timeout": "3000"}) == 0, w.err
    assert w.node1.called("shutdownFlags")


def test_stop_fails_when_the_domain_survives_destroy(w):
    """A QEMU stuck in the kernel survives destroy: stop fails and Pacemaker fences."""
    assert w.start() == 0
    w.node1.guest("vm1").destroy = "stuck"
    assert w.run("stop", {"force_stop": "true"}, meta={"timeout": "2000"}) == 1
    assert "still running after destroy; the node must be fenced" in w.reason
    assert w.node1.running("vm1")


def test_stop_force_stop_destroys_at_once(w):
    assert w.start() == 0
    assert w.run("stop", {"force_stop": "yes"}) == 0
    assert not w.node1.called("shutdownFlags")
    assert [c[2] for c in w.node1.called("destroyFlags")] == [(0,)]


@pytest.mark.parametrize("mode,flags", [("agent", VIR.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT),
                                        ("acpi", VIR.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN),
                                        ("acpi,agent", VIR.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN |
                                         VIR.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT),
                                        ("signal", VIR.VIR_DOMAIN_SHUTDOWN_SIGNAL)])
def test_stop_shutdown_mode_passes_the_flag(w, mode, flags):
    assert w.start() == 0
    w.node1.guest("vm1").agent = True
    assert w.run("stop", {"shutdown_mode": mode}) == 0
    assert [c[2] for c in w.node1.called("shutdownFlags")] == [(flags,)]
    assert not w.node1.called("destroyFlags")


def test_stop_agent_mode_without_agent_falls_back_to_destroy(w):
    assert w.start() == 0
    assert w.run("stop", {"shutdown_mode": "agent"}) == 0
    assert w.node1.called("shutdownFlags") and w.node1.called("destroyFlags")
    assert "graceful shutdown of vm1 refused" in w.logfile.read_text()


def test_stop_without_config_uses_the_remembered_identity(w):
    assert w.start() == 0
    w.config.unlink()
    assert w.run("stop") == 0, w.err
    assert not w.node1.running("vm1")


def test_stop_when_not_running_and_idempotent(w):
    assert w.start() == 0
    assert w.run("stop") == 0
    assert w.run("stop") == 0
    assert len(w.node1.called("shutdownFlags")) == 1


def test_stop_with_libvirt_down_and_no_qemu_succeeds(w, monkeypatch):
    assert w.start() == 0
    w.node1.reachable = False
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: None)
    assert w.run("stop") == 0


def test_stop_with_libvirt_down_kills_the_qemu_process(w):
    """libvirtd is down and the QEMU still runs: stop terminates the process itself."""
    assert w.start() == 0
    w.node1.reachable = False
    pid = w.qemu_pid_of("vm1")
    proc = w.procs["vm1"]
    assert w.run("stop") == 0, w.err
    assert proc.wait(5) == -15                      # SIGTERM was enough
    assert "terminating QEMU of vm1 (pid %d) directly" % pid in w.logfile.read_text()
    assert not w.node1.running("vm1")


def test_stop_with_invalid_configuration_still_stops(w):
    """stop after validation failed (ocf-rarun's rule): it stops what it can find."""
    assert w.start() == 0
    assert w.run("stop", {"force_stop": "bogus", "shutdown_mode": "nonsense"}) == 0, w.err
    assert not w.node1.running("vm1")


def test_stop_save_config_on_stop(w):
    assert w.start() == 0
    w.node1.guest("vm1").xml = "<domain><name>vm1</name><!-- changed while running --></domain>"
    assert w.run("stop", {"save_config_on_stop": "true"}) == 0
    assert "changed while running" in w.config.read_text()


# ----------------------------------------------------------------------------- migration

def test_migrate_to_without_target_fails_before_any_io(w):
    assert w.start() == 0
    opened, sessions = w.node1.opened, len(w.ceph.sessions)
    assert w.run("migrate_to") == ocf.OCF_ERR_CONFIGURED
    assert "OCF_RESKEY_CRM_meta_migrate_target" in w.reason
    assert (w.node1.opened, len(w.ceph.sessions)) == (opened, sessions)


def test_migrate_from_without_source_is_configured_error(w):
    assert w.run("migrate_from") == ocf.OCF_ERR_CONFIGURED


def _pacemaker_tools(w, health):
    """crm_mon answers the real 2.1.5 sample; attrd answers node2's #health-ceph."""
    import test_cluster
    sample = w.tmp / "crm_mon.xml"
    sample.write_text(test_cluster.CRM_MON)
    w.bin.add("crm_mon", "cat '%s'" % sample)
    w.bin.add("attrd_updater", """case "$*" in
  "-n #health-ceph -Q --output-as=xml -N node2") echo '<pacemaker-result api-version="2.25">
  <attribute name="#health-ceph" value="%s" host="node2"/>
  <status code="0" message="OK"/>
</pacemaker-result>';;
  *) echo "attrd_updater: no such attribute" >&2; exit 105;;
esac""" % health)
    w.params["membership"] = ""


def test_migrate_to_refuses_a_red_target(w):
    _pacemaker_tools(w, "red")
    assert w.start() == 0, w.err
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == ocf.OCF_ERR_GENERIC
    assert "target node node2 reports #health-ceph=red" in w.reason
    assert not w.node1.called("migrateToURI3")
    assert w.node1.running("vm1") and not w.node2.running("vm1")
    assert ["attrd_updater", "-n", "#health-ceph", "-Q", "--output-as=xml", "-N",
            "node2"] in w.bin.calls()


def test_migrate_to_a_green_target(w):
    _pacemaker_tools(w, "green")
    assert w.start() == 0
    assert w.run("migrate_to", {"migration_downtime": "200"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    (call,) = w.node1.called("migrateToURI3")
    uri, params, flags = call[2]
    assert uri == "qemu://node2/system" and params == {}
    assert flags == VIR.VIR_MIGRATE_LIVE | VIR.VIR_MIGRATE_PEER2PEER
    assert w.node2.running("vm1") and not w.node1.running("vm1")
    assert "live-migrating vm1 to node2 (qemu://node2/system)" in w.logfile.read_text()
    # the watcher moved with the guest: node2's QEMU is now the writer
    assert [x["addr"].split(":")[0] for x in w.ceph.image("rbd/vm1-root").watchers] == [NODE2]


def test_migrate_to_refuses_while_a_second_writer_exists(w):
    assert w.start() == 0
    w.holder("rbd/vm1-root", NODE3, lock=False)
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 1
    assert "refusing to migrate while a second writer exists" in w.reason
    assert not w.node1.called("migrateToURI3")


def test_migrate_to_a_domain_not_running_here(w):
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 1
    assert "not running on this node" in w.reason


def test_migrate_to_failure_leaves_the_domain_here(w):
    assert w.start() == 0
    w.node1.migration = "fail"
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 1
    assert "live migration of vm1 to node2 failed" in w.reason
    assert w.node1.running("vm1")


def test_migrate_from_confirms_the_domain_arrived(w, monkeypatch):
    assert w.start() == 0
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0
    # now act as node2
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = NODE2
    assert w.run("migrate_from", meta={"migrate_source": "node1", "on_node": "node2"}) == 0
    assert "migration of vm1 from node1: took 512 ms, downtime 19 ms" in w.logfile.read_text()
    # and node1's stop finds nothing left to stop
    fakes.install(monkeypatch, host=w.node1)
    assert w.run("stop") == 0
    assert not w.node1.called("destroyFlags")


def test_migration_deadline_aborts_the_job(w):
    """virt.migrate at its deadline: abortJob, the domain keeps running here."""
    w.node1.add_guest("vm9")
    w.node1.migration = "block"
    hv = virt.Hypervisor("qemu:///system", ocf.Deadline(4.0, margin_s=0),
                         libvirt_mod=w.node1.module)
    dom = hv.lookup("vm9")
    with pytest.raises(virt.MigrationTimeout, match="aborted, the domain still runs"):
        virt.migrate(hv, dom, "qemu://node2/system", {}, VIR.VIR_MIGRATE_LIVE |
                     VIR.VIR_MIGRATE_PEER2PEER, max_downtime_ms=300, poll=0.05)
    assert w.node1.called("abortJob") and w.node1.running("vm9")
    assert [c[2] for c in w.node1.called("migrateSetMaxDowntime")] == [(300,)]


# ----------------------------------------------------------------------------- URIs

def _p(**env):
    return Params(SPEC, dict({"OCF_RESKEY_config": "/etc/vm1.xml"},
                             **{"OCF_RESKEY_" + k: v for k, v in env.items()}))


def _args(target="node2", **env):
    return migration_args(_p(**env), target)


FLAGS = VIR.VIR_MIGRATE_LIVE | VIR.VIR_MIGRATE_PEER2PEER


@pytest.mark.parametrize("env,target,uri", [
    ({}, "node2", "qemu://node2/system"),
    ({"hypervisor": "qemu:///session"}, "node2", "qemu://node2/session"),
    ({"migration_user": "root"}, "node2", "qemu://root@node2/system"),
    ({"migration_transport": "ssh"}, "node2", "qemu+ssh://node2/system"),
    ({"migration_transport": "tcp", "migration_user": "admin"}, "node2",
     "qemu+tcp://admin@node2/system"),
    ({"migration_network_suffix": "-mig"}, "node2", "qemu://node2-mig/system"),
    ({"migration_network_suffix": "-mig"}, "node2.example.com",
     "qemu://node2-mig.example.com/system"),
    ({"migration_network_suffix": "-mig", "migration_transport": "tls"}, "node2.example.com",
     "qemu+tls://node2-mig.example.com/system"),
    ({"remoteuri": "qemu+tls://%n.storage/system", "migration_transport": "ssh",
      "migration_user": "x", "migration_network_suffix": "-mig"}, "node2",
     "qemu+tls://node2.storage/system"),
])
def test_remote_uri(env, target, uri):
    assert _args(target, **env)[0] == uri


@pytest.mark.parametrize("env,target,params", [
    ({}, "node2", {}),
    ({"migrateport": "49152"}, "node2", {VIR.VIR_MIGRATE_PARAM_URI: "tcp://node2:49152"}),
    ({"migrateport": "49152", "migration_network_suffix": "-mig"}, "node2.example.com",
     {VIR.VIR_MIGRATE_PARAM_URI: "tcp://node2-mig.example.com:49152"}),
    # the stream takes the migration network too, port left to libvirt
    ({"migration_network_suffix": "-mig"}, "node2",
     {VIR.VIR_MIGRATE_PARAM_URI: "tcp://node2-mig"}),
    ({"migrateuri": "tcp://%n-stream:49200", "migrateport": "49152",
      "migration_network_suffix": "-mig"}, "node2",
     {VIR.VIR_MIGRATE_PARAM_URI: "tcp://node2-stream:49200"}),
    ({"migrate_options": "--migrateuri=tcp://%n-x:1"}, "node2",
     {VIR.VIR_MIGRATE_PARAM_URI: "tcp://node2-x:1"}),
    ({"migrateuri": "tcp://a:1", "migrate_options": "--migrateuri tcp://b:2"}, "node2",
     {VIR.VIR_MIGRATE_PARAM_URI: "tcp://a:1"}),
    ({"migration_speed": "100"}, "node2", {VIR.VIR_MIGRATE_PARAM_BANDWIDTH: 100}),
])
def test_migration_params(env, target, params):
    _uri, got, flags = _args(target, **env)
    assert got == params and flags == FLAGS


def test_migration_plan_is_the_args_and_the_downtime():
    from vmceph.migration import migration_plan
    p = _p(migration_downtime="300", migration_speed="100", migration_network_suffix="-mig")
    plan = migration_plan(p, "node2")
    assert (plan.dconnuri, plan.params, plan.flags) == migration_args(p, "node2")
    assert plan.downtime == 300 and plan.flags == FLAGS
    assert migration_plan(_p(), "node2").downtime == 0     # 0: libvirt's default


@pytest.mark.parametrize("text,flags,uri", [
    ("", 0, None),
    ("--live --p2p", 0, None),
    ("--unsafe --compressed", VIR.VIR_MIGRATE_UNSAFE | VIR.VIR_MIGRATE_COMPRESSED, None),
    ("--auto-converge --tls --abort-on-error",
     VIR.VIR_MIGRATE_AUTO_CONVERGE | VIR.VIR_MIGRATE_TLS | VIR.VIR_MIGRATE_ABORT_ON_ERROR,
     None),
    ("--persistent --undefinesource", VIR.VIR_MIGRATE_PERSIST_DEST |
     VIR.VIR_MIGRATE_UNDEFINE_SOURCE, None),
    ("--migrateuri tcp://%n:49152 --unsafe", VIR.VIR_MIGRATE_UNSAFE, "tcp://%n:49152"),
    ("--migrateuri=tcp://x:1", 0, "tcp://x:1"),
])
def test_migrate_options(text, flags, uri):
    assert parse_migrate_options(text) == (flags, uri)


def test_migrate_options_flags_reach_libvirt():
    assert _args(migrate_options="--unsafe --persistent")[2] == (
        FLAGS | VIR.VIR_MIGRATE_UNSAFE | VIR.VIR_MIGRATE_PERSIST_DEST)


@pytest.mark.parametrize("text", ["--bogus", "--live extra"])   # more in test_parity.py
def test_migrate_options_refused(text):
    with pytest.raises(ConfigError) as e:
        parse_migrate_options(text)
    assert "is not supported by RBDVirtualDomain" in e.value.reason
    assert "--unsafe" in e.value.reason                  # the message lists what is


def test_postcopy_is_refused_with_its_reason():
    """--postcopy alone only allows post-copy (migrate-postcopy starts it during the job):
    refused with what to add instead (test_parity.py: the forms that do switch)."""
    with pytest.raises(ConfigError) as e:
        parse_migrate_options("--auto-converge --postcopy")
    assert e.value.reason == "migrate_options: " + migration.POSTCOPY_ALONE


@pytest.mark.parametrize("action", ["validate-all", "start", "migrate_to"])
def test_postcopy_fails_validation(w, action):
    rc = w.run(action, {"migrate_options": "--postcopy"})
    assert rc == ocf.OCF_ERR_CONFIGURED, w.err
    assert "--postcopy alone only allows post-copy" in w.reason
    assert "--postcopy-after-precopy" in w.reason
    assert not w.node1.called("createXML") and not w.node1.called("migrateToURI3")


def test_agent_flag_values_are_libvirts():
    for opt, flag in migration.MIGRATE_OPTIONS.items():
        name = {"--unsafe": "UNSAFE", "--compressed": "COMPRESSED",
                "--auto-converge": "AUTO_CONVERGE", "--tls": "TLS",
                "--abort-on-error": "ABORT_ON_ERROR", "--persistent": "PERSIST_DEST",
                "--undefinesource": "UNDEFINE_SOURCE"}.get(opt)   # all: test_parity.py
        assert name is None or getattr(VIR, "VIR_MIGRATE_" + name) == flag
    for mode, flag in stopseq.SHUTDOWN_MODES.items():
        name = {"acpi": "ACPI_POWER_BTN", "agent": "GUEST_AGENT", "initctl": "INITCTL",
                "signal": "SIGNAL", "paravirt": "PARAVIRT"}[mode]
        assert getattr(VIR, "VIR_DOMAIN_SHUTDOWN_" + name) == flag
    assert (migration.VIR_MIGRATE_LIVE, migration.VIR_MIGRATE_PEER2PEER) == (
        VIR.VIR_MIGRATE_LIVE, VIR.VIR_MIGRATE_PEER2PEER)


@pytest.mark.parametrize("params,fragment", [({"membership": "node2=alive"}, "membership entry"),
                                             ({"node_addresses": "node2"}, "node_addresses")])
def test_deep_monitor_with_a_bad_cluster_parameter_is_a_configuration_error(w, params,
                                                                            fragment):
    """Only start/migrate validate every parameter; a deep monitor that meets a bad one
    reports it as such, not as an internal error with a traceback."""
    assert w.start() == 0
    assert w.run("monitor", params, interval=10000, depth=20) == ocf.OCF_ERR_CONFIGURED
    assert fragment in w.reason and "Traceback" not in w.err



def test_static_membership_is_refused_inside_a_cluster(w):
    """When Pacemaker answers, a static membership must not override its view."""
    import test_cluster
    sample = w.tmp / "crm_mon.xml"
    sample.write_text(test_cluster.CRM_MON)
    w.bin.add("crm_mon", "cat '%s'" % sample)
    w.bin.add("cibadmin", "echo '<nodes/>'")
    assert w.start(membership="node1=member node2=fenced") == ocf.OCF_ERR_CONFIGURED
    assert "only for running outside a cluster" in w.reason
    assert not w.node1.called("createXML")
