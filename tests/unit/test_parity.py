"""A resource switched from ocf:heartbeat:VirtualDomain keeps working (issue 13, "VirtualDomain
parity gaps"): the virsh migrate options its users pass, the URIs VirtualDomain builds from
hypervisor and migration_transport, start_resources on the migration target,
save_config_on_stop at every action VirtualDomain saves at, the default hypervisor from
`virsh uri`, the current vCPU count for utilization, and a malformed domain XML file as this
node's problem (OCF_ERR_INSTALLED).

The oracles are VirtualDomain's behaviour (resource-agents 4.12) and virsh's (9.0 `virsh
migrate --help`), read from their documentation, and libvirt's own flag values.
"""

import os

import pytest

import fakes
from test_agent_flows import World
from vmceph import migration, ocf, virt
from vmceph.migration import migration_args, read_migrate_options, remote_uri
from vmceph.ocf import ConfigError, Params
from vmceph.rbdvd_params import SPEC

VIR = fakes.real_libvirt
LIVE_P2P = VIR.VIR_MIGRATE_LIVE | VIR.VIR_MIGRATE_PEER2PEER


@pytest.fixture
def w(tmp_path, monkeypatch):
    monkeypatch.setattr(virt, "_DEFAULT_URI", {})    # a fresh process's `virsh uri`
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def _p(**env):
    return Params(SPEC, dict({"OCF_RESKEY_config": "/etc/vm1.xml"},
                             **{"OCF_RESKEY_" + k: v for k, v in env.items()}))


# ----------------------------------------------------------------------- migrate_options

@pytest.mark.parametrize("opt,flag", [
    ("--tunnelled", "TUNNELLED"), ("--persistent", "PERSIST_DEST"),
    ("--undefinesource", "UNDEFINE_SOURCE"), ("--change-protection", "CHANGE_PROTECTION"),
    ("--unsafe", "UNSAFE"), ("--compressed", "COMPRESSED"),
    ("--abort-on-error", "ABORT_ON_ERROR"), ("--auto-converge", "AUTO_CONVERGE"),
    ("--rdma-pin-all", "RDMA_PIN_ALL"), ("--tls", "TLS"), ("--parallel", "PARALLEL"),
    ("--zerocopy", "ZEROCOPY"),
])
def test_every_virsh_flag_maps_to_libvirts_flag(opt, flag):
    assert read_migrate_options(opt).flags == getattr(VIR, "VIR_MIGRATE_" + flag)


@pytest.mark.parametrize("text,param,value", [
    ("--bandwidth 100", "BANDWIDTH", 100),
    ("--bandwidth=100", "BANDWIDTH", 100),
    ("--parallel --parallel-connections 4", "PARALLEL_CONNECTIONS", 4),
    ("--tls --tls-destination node2.example.com", "TLS_DESTINATION", "node2.example.com"),
    ("--postcopy --postcopy-after-precopy --postcopy-bandwidth 50", "BANDWIDTH_POSTCOPY", 50),
    ("--compressed --comp-methods mt,xbzrle", "COMPRESSION", ["mt", "xbzrle"]),
    ("--comp-mt-level 9", "COMPRESSION_MT_LEVEL", 9),
    ("--comp-mt-threads 2", "COMPRESSION_MT_THREADS", 2),
    ("--comp-mt-dthreads 2", "COMPRESSION_MT_DTHREADS", 2),
    ("--comp-xbzrle-cache 67108864", "COMPRESSION_XBZRLE_CACHE", 67108864),
    ("--auto-converge --auto-converge-initial 20", "AUTO_CONVERGE_INITIAL", 20),
    ("--auto-converge-increment 10", "AUTO_CONVERGE_INCREMENT", 10),
    ("--graphicsuri spice://node2", "GRAPHICS_URI", "spice://node2"),
    ("--listen-address 10.0.0.2", "LISTEN_ADDRESS", "10.0.0.2"),
])
def test_virsh_options_with_a_value_become_libvirts_typed_parameters(text, param, value):
    assert read_migrate_options(text).params[getattr(VIR, "VIR_MIGRATE_PARAM_" + param)] == value


def test_a_typical_virtualdomain_migrate_options_line_reaches_libvirt(w):
    """What VirtualDomain users write (the five the issue names among them) passes
    validation and arrives in migrateToURI3 as flags and typed parameters."""
    opts = ("--live --p2p --verbose --timeout 300 --parallel --parallel-connections 2 "
            "--tls --tls-destination node2 --auto-converge --compressed --bandwidth 500")
    assert w.run("validate-all", {"migrate_options": opts}) == 0, w.err
    assert w.start() == 0
    assert w.run("migrate_to", {"migrate_options": opts},
                 meta={"migrate_target": "node2"}) == 0, w.err
    (call,) = w.node1.called("migrateToURI3")
    _uri, params, flags = call[2]
    assert flags == LIVE_P2P | VIR.VIR_MIGRATE_PARALLEL | VIR.VIR_MIGRATE_TLS | \
        VIR.VIR_MIGRATE_AUTO_CONVERGE | VIR.VIR_MIGRATE_COMPRESSED
    assert params == {VIR.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 2,
                      VIR.VIR_MIGRATE_PARAM_TLS_DESTINATION: "node2",
                      VIR.VIR_MIGRATE_PARAM_BANDWIDTH: 500}
    assert w.node2.running("vm1")


def test_bandwidth_option_wins_over_migration_speed():
    _uri, params, _f = migration_args(_p(migration_speed="100",
                                         migrate_options="--bandwidth 300"), "node2")
    assert params[VIR.VIR_MIGRATE_PARAM_BANDWIDTH] == 300


@pytest.mark.parametrize("text,why", [
    ("--offline", "drop it"),
    ("--direct", "peer-to-peer"),
    ("--suspend", "arrive paused"),
    ("--copy-storage-all", "RBD images every node reaches"),
    ("--copy-storage-inc", "RBD images every node reaches"),
    ("--migrate-disks vda", "RBD images every node reaches"),
    ("--postcopy-resume", "does not start one"),
    ("--dname other", "rename it there"),
    ("--xml /tmp/x.xml", "config parameter"),
    ("--persistent-xml /tmp/x.xml", "config parameter"),
    ("--bandwidth", "--bandwidth needs a value"),
    ("--bandwidth fast", "whole number"),
    ("--parallel-connections -1", "must be 0 to"),
    ("--timeout 0", "must be 1 to"),
    ("--timeout-postcopy", "needs --timeout SECONDS"),
    ("--tunnelled --migrateuri tcp://x", "--migrateuri does not apply"),
    ("--frobnicate", "not an option of virsh migrate"),
])
def test_options_the_agent_cannot_honour_are_refused_with_what_to_do(text, why):
    with pytest.raises(ConfigError) as e:
        read_migrate_options(text)
    assert e.value.reason.startswith("migrate_options: ") and why in e.value.reason


def test_postcopy_alone_is_refused_and_says_how_to_have_it_switch():
    with pytest.raises(ConfigError) as e:
        read_migrate_options("--postcopy")
    assert "--postcopy-after-precopy" in e.value.reason
    assert "--timeout SECONDS --timeout-postcopy" in e.value.reason


@pytest.mark.parametrize("text,switch", [
    ("--postcopy --postcopy-after-precopy", virt.Switch(None, "suspend", True)),
    ("--postcopy-after-precopy", virt.Switch(None, "suspend", True)),
    ("--postcopy --timeout 30 --timeout-postcopy", virt.Switch(30, "postcopy", False)),
    ("--timeout 30", virt.Switch(30, "suspend", False)),
    ("--timeout=30 --timeout-suspend", virt.Switch(30, "suspend", False)),
])
def test_timeout_and_postcopy_switches(text, switch):
    o = read_migrate_options(text)
    assert o.switch == switch
    assert bool(o.flags & VIR.VIR_MIGRATE_POSTCOPY) == (
        switch.after_precopy or switch.action == "postcopy")


def test_postcopy_after_precopy_starts_post_copy_after_the_first_pass(w):
    """The gap of the issue: --postcopy was accepted and post-copy never started. Now the
    agent starts it once the job's first pass over the memory is done."""
    assert w.start() == 0
    w.node1.migration = "block"                      # pre-copy alone never converges
    w.node1.migration_stats["memory_iteration"] = 2
    assert w.run("migrate_to", {"migrate_options": "--postcopy --postcopy-after-precopy"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert w.node1.called("migrateStartPostCopy") and w.node2.running("vm1")
    assert "switched to post-copy" in w.logfile.read_text()


def test_no_post_copy_before_the_first_pass_is_done(w):
    w.node1.add_guest("vm9")
    w.node1.migration = "block"
    hv = virt.Hypervisor("qemu:///system", ocf.Deadline(4.0, margin_s=0),
                         libvirt_mod=w.node1.module)
    with pytest.raises(virt.MigrationTimeout):
        virt.migrate(hv, hv.lookup("vm9"), "qemu://node2/system", {},
                     LIVE_P2P | VIR.VIR_MIGRATE_POSTCOPY, poll=0.05,
                     switch=virt.Switch(None, "suspend", True))
    assert not w.node1.called("migrateStartPostCopy")   # iteration 1 all along: aborted


def test_timeout_suspends_the_guest_so_that_it_converges(w):
    assert w.start() == 0
    w.node1.migration = "block"
    assert w.run("migrate_to", {"migrate_options": "--timeout 1"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert w.node1.called("suspend") and not w.node1.called("migrateStartPostCopy")
    assert w.node2.running("vm1")


def test_timeout_postcopy_switches_after_the_timeout(w):
    assert w.start() == 0
    w.node1.migration = "block"
    assert w.run("migrate_to", {"migrate_options": "--postcopy --timeout 1 --timeout-postcopy"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert w.node1.called("migrateStartPostCopy") and not w.node1.called("suspend")


# ----------------------------------------------------------------------- URIs

@pytest.mark.parametrize("env,target,uri", [
    # VirtualDomain keeps the driver, port and path of hypervisor and puts the transport in
    ({"hypervisor": "qemu:///session", "migration_transport": "tcp"}, "node2",
     "qemu+tcp://node2/session"),
    ({"hypervisor": "qemu:///system", "migration_transport": "ssh",
      "migration_user": "admin"}, "node2", "qemu+ssh://admin@node2/system"),
    ({"hypervisor": "qemu+tcp://localhost:16510/system"}, "node2",
     "qemu+tcp://node2:16510/system"),
    ({"hypervisor": "qemu+tcp://localhost:16510/system", "migration_transport": "tls"},
     "node2", "qemu+tls://node2:16510/system"),
    ({"hypervisor": "qemu+ssh://root@localhost/system?keyfile=/root/.ssh/k"}, "node2",
     "qemu+ssh://node2/system?keyfile=/root/.ssh/k"),
    ({"hypervisor": "qemu+unix:///system"}, "node2", "qemu://node2/system"),
    ({"hypervisor": "qemu:///system", "migration_transport": "tcp",
      "migration_network_suffix": "-mig"}, "node2.example.com",
     "qemu+tcp://node2-mig.example.com/system"),
])
def test_remote_uri_keeps_scheme_port_and_path(env, target, uri):
    assert migration_args(_p(**env), target)[0] == uri


def test_remote_uri_from_the_default_hypervisor():
    assert remote_uri("qemu:///system", "fd00::2", "tcp") == "qemu+tcp://[fd00::2]/system"


@pytest.mark.parametrize("transport", ["carrier-pigeon", "http", "TCP"])
def test_validate_all_refuses_an_unknown_transport(w, transport):
    assert w.run("validate-all", {"migration_transport": transport}) == \
        ocf.OCF_ERR_CONFIGURED
    assert "migration_transport" in w.reason and "unknown libvirt transport" in w.reason
    assert "tcp" in w.reason                           # what to use instead


# ----------------------------------------------------------------------- start_resources

def _with_network(w):
    xml = fakes.domain_xml().replace(
        "</devices>", "  <interface type='network'><source network='vmnet'/></interface>\n"
        "  </devices>")
    w.config.write_text(xml)
    w.node1.networks["vmnet"] = True
    w.node2.networks["vmnet"] = False


def test_migrate_to_starts_the_networks_on_the_target(w):
    _with_network(w)
    assert w.start(start_resources="true") == 0, w.err
    assert w.run("migrate_to", {"start_resources": "true"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert w.node2.networks["vmnet"] is True
    assert w.node2.called("networkCreate") and not w.node1.called("networkCreate")


def test_migrate_to_fails_when_the_targets_network_cannot_start(w):
    _with_network(w)
    assert w.start() == 0
    del w.node2.networks["vmnet"]                      # not defined on the target
    assert w.run("migrate_to", {"start_resources": "true"},
                 meta={"migrate_target": "node2"}) == ocf.OCF_ERR_GENERIC
    assert "on the target" in w.reason and "vmnet" in w.reason
    assert not w.node1.called("migrateToURI3") and w.node1.running("vm1")


# ----------------------------------------------------------------------- save_config_on_stop

CHANGED = fakes.domain_xml().replace("<vcpu>2</vcpu>", "<vcpu>3</vcpu><!-- edited -->")


def _changed_while_running(w):
    w.node1.guest("vm1").xml = CHANGED


def test_save_config_at_migrate_to(w):
    assert w.start() == 0
    _changed_while_running(w)
    assert w.run("migrate_to", {"save_config_on_stop": "true"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert w.config.read_text() == CHANGED


def test_save_config_at_migrate_from(w, monkeypatch):
    assert w.start() == 0
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0
    w.node2.guest("vm1").xml = CHANGED
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = "10.252.0.2"
    assert w.run("migrate_from", {"save_config_on_stop": "true"},
                 meta={"migrate_source": "node1", "on_node": "node2"}) == 0, w.err
    assert w.config.read_text() == CHANGED


def test_save_config_at_recurring_monitor_only_when_changed(w):
    assert w.start() == 0
    before = os.stat(w.config)
    assert w.run("monitor", {"save_config_on_stop": "true"}, interval=10000) == 0
    # libvirt returns the file's own text: nothing written
    assert os.stat(w.config).st_ino == before.st_ino
    _changed_while_running(w)
    assert w.run("monitor", {"save_config_on_stop": "true"}, interval=10000) == 0
    assert w.config.read_text() == CHANGED
    written = os.stat(w.config).st_ino
    assert w.run("monitor", {"save_config_on_stop": "true"}, interval=10000) == 0
    assert os.stat(w.config).st_ino == written             # unchanged: not rewritten
    assert w.run("monitor", {"save_config_on_stop": "true"}) == 0     # a probe never writes


def test_save_config_through_a_symlink(w):
    real = w.tmp / "real" / "vm1.xml"
    real.parent.mkdir()
    real.write_text(w.config.read_text())
    os.chmod(real, 0o640)
    w.config.unlink()
    w.config.symlink_to(real)
    assert w.start() == 0
    _changed_while_running(w)
    assert w.run("monitor", {"save_config_on_stop": "true"}, interval=10000) == 0
    assert w.config.is_symlink() and real.read_text() == CHANGED
    assert os.stat(real).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("xml,why", [
    ("", "empty"),
    ("<domain><name>vm1</name>", "not well-formed"),
    (fakes.domain_xml(name="other"), "not 'vm1'"),
    (fakes.domain_xml(uuid="11111111-2222-4333-8444-555555555555"), "UUID"),
])
def test_an_implausible_definition_is_not_saved(w, xml, why):
    assert w.start() == 0
    original = w.config.read_text()
    w.node1.guest("vm1").xml = xml
    assert w.run("monitor", {"save_config_on_stop": "true"}, interval=10000) == 0
    assert w.config.read_text() == original
    assert why in w.logfile.read_text()


def test_sync_config_runs_csync2_for_the_config_file_only(w):
    w.bin.add("csync2")
    assert w.start() == 0
    _changed_while_running(w)
    assert w.run("stop", {"sync_config_on_stop": "true"}) == 0, w.err
    assert w.config.read_text() == CHANGED
    assert w.bin.calls("csync2") == [["csync2", "-x", str(w.config)]]


# ----------------------------------------------------------------------- default hypervisor

def test_unset_hypervisor_is_what_virsh_uri_answers(w):
    w.bin.add("virsh", 'echo "qemu:///session"')
    assert w.start() == 0, w.err
    assert {c[2][0] for c in w.node1.called("open")} == {"qemu:///session"}
    assert "hypervisor=qemu:///session" in (
        w.tmp / "rsctmp" / "vmceph-RBDVirtualDomain-vm1.state").read_text()
    asked = len(w.bin.calls("virsh"))
    virt._DEFAULT_URI.clear()                          # the monitor is a new process
    assert w.run("monitor", interval=10000) == 0
    assert len(w.bin.calls("virsh")) == asked          # remembered: no program run
    assert w.node1.called("open")[-1][2] == ("qemu:///session",)
    # the migration to the target takes the same driver and path
    assert w.run("migrate_to", {"migration_transport": "tcp"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert w.node1.called("migrateToURI3")[0][2][0] == "qemu+tcp://node2/session"


@pytest.mark.parametrize("body", ["exit 1", "echo 'not a uri'", "sleep 30"])
def test_unset_hypervisor_falls_back_to_qemu_system(w, body):
    w.bin.add("virsh", body)
    assert virt.default_uri(1.0) == "qemu:///system"


def test_hypervisor_declares_no_default_like_virtualdomain():
    assert SPEC.param_index["hypervisor"].default is None


# ----------------------------------------------------------------------- utilization

def test_utilization_counts_the_current_vcpus(w):
    w.config.write_text(fakes.domain_xml().replace(
        "<vcpu>2</vcpu>", "<vcpu placement='static' current='2'>8</vcpu>"))
    assert w.start() == 0, w.err
    assert ["crm_resource", "-r", "vm1", "-z", "-p", "cpu", "-v", "2"] in \
        w.bin.calls("crm_resource")


# ----------------------------------------------------------------------- malformed XML

@pytest.mark.parametrize("action,interval", [("validate-all", None), ("start", None),
                                             ("monitor", 10000)])
def test_a_malformed_xml_file_is_this_nodes_problem(w, action, interval):
    w.config.write_text("<domain type='kvm'><name>vm1</name><devices>")  # cut short
    assert w.run(action, interval=interval) == ocf.OCF_ERR_INSTALLED
    assert "not well-formed" in w.reason and "on this node" in w.reason


def test_a_wrong_parameter_value_stays_configured(w):
    assert w.run("start", {"migrate_options": "--copy-storage-all"}) == \
        ocf.OCF_ERR_CONFIGURED


def test_post_copy_waits_until_qemu_sends_memory(w):
    """The lab, under load: libvirt's job existed (iteration 0) a second after the start,
    and QEMU refused migrate-start-postcopy then. The switch waits for iteration 1."""
    assert virt._switch_due(virt.Switch(1, "postcopy", False), {"memory_iteration": 0}, 5) \
        is None
    assert virt._switch_due(virt.Switch(1, "postcopy", False), {"memory_iteration": 1}, 5) \
        == "postcopy"
    assert virt._switch_due(virt.Switch(1, "suspend", False), {"memory_iteration": 0}, 5) \
        == "suspend"                                   # a pause is fine at any time


def test_a_refused_switch_is_tried_again(w, monkeypatch):
    assert w.start() == 0
    w.node1.migration = "block"
    real, refusals = virt.Hypervisor.start_postcopy, []

    def refuse_once(hv, dom, cap=5.0):
        if not refusals:
            refusals.append(1)
            raise virt.VirtOperationFailed("migrateStartPostCopy: internal error: Enable "
                                           "postcopy with migrate_set_capability before the "
                                           "start of migration")
        return real(hv, dom, cap)
    monkeypatch.setattr(virt.Hypervisor, "start_postcopy", refuse_once)
    assert w.run("migrate_to", {"migrate_options": "--postcopy --timeout 1 --timeout-postcopy"},
                 meta={"migrate_target": "node2"}) == 0, w.err
    assert refusals and w.node1.called("migrateStartPostCopy") and w.node2.running("vm1")
    assert "(trying again)" in w.logfile.read_text()
