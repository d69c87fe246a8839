"""A VirtualDomain resource as its users write it, switched to RBDVirtualDomain by its type
alone (issue 13): the same instance attributes run first under ocf:heartbeat:VirtualDomain
(installed by resource-agents), then under ocf:vmceph:RBDVirtualDomain, on the real lab:
validate-all, start, monitor, live migration (migrate_to + migrate_from), stop.

The attributes: no hypervisor (both ask `virsh uri`), migration_transport=tcp, several
virsh migrate options, migrateuri with %n, save_config_on_stop=true (both rewrite the file
from libvirt's dump: RBDVirtualDomain then reads what VirtualDomain wrote), force_stop (the
lab's guests have no OS to answer ACPI). RBDVirtualDomain also gets its own parameters,
which have no VirtualDomain counterpart: the Ceph credentials, and node_addresses and
membership, which stand for what Pacemaker tells it in a cluster (this lab runs none).
"""

import re

import pytest

from conftest import Agent

USERS_OPTIONS = ("--p2p --auto-converge --abort-on-error --timeout 120 --bandwidth 1000 "
                 "--parallel --parallel-connections 2")


def _users_attributes(vm):
    return {
        "config": str(vm.config),
        "migration_transport": "tcp",
        "migrate_options": USERS_OPTIONS,
        "migrateuri": "tcp://%n:49152",
        "save_config_on_stop": "true",
        "force_stop": "true",
        # no Pacemaker in this lab: crm_resource has no cluster to set utilization in
        "autoset_utilization_cpu": "false", "autoset_utilization_hv_memory": "false",
        "autoset_utilization_host_memory": "false",
    }


def _lifecycle(lab, agent, vm):
    """validate-all, start, monitor, migrate node 1 -> 2, stop: each must succeed."""
    n1, n2 = lab.node_name(1), lab.node_name(2)
    move = {"migrate_source": n1, "migrate_target": n2}
    steps = [(1, "validate-all", {}, 0), (1, "start", {}, 0), (1, "monitor", {}, 10000),
             (1, "migrate_to", move, 0), (2, "migrate_from", move, 0), (1, "stop", {}, 0),
             (2, "monitor", {}, 10000)]
    results = {}
    for node, action, meta, interval in steps:
        r = agent(node, action, meta=meta, interval_ms=interval, timeout_ms=120000)
        assert r.rc == 0, (agent.path, node, action, r)
        results[action] = r
    assert vm.running_on() == [2], agent.path
    assert vm.writer_ips() == [lab.node_ip(2)]
    r = agent(2, "stop", timeout_ms=60000)
    assert r.rc == 0, (agent.path, "stop", r)
    assert vm.running_on() == []
    return results


def test_virtualdomain_resource_switched_to_rbdvirtualdomain(lab, make_vm):
    vm = make_vm(disks=1)
    users = _users_attributes(vm)
    vm.agent.params.pop("hypervisor", None)
    own = {k: vm.agent.params[k] for k in ("ceph_conf", "ceph_user", "ceph_keyring",
                                           "node_addresses", "membership")}

    heartbeat = Agent(lab, "VirtualDomain", vm.name, users, provider="heartbeat")
    _lifecycle(lab, heartbeat, vm)
    dumped = vm.config.read_text()
    assert "<uuid>" in dumped, "VirtualDomain's save_config_on_stop wrote libvirt's dump"

    ours = Agent(lab, "RBDVirtualDomain", vm.name, dict(users, **own))
    results = _lifecycle(lab, ours, vm)
    n2 = lab.node_name(2)
    log = results["migrate_to"].stderr
    # hypervisor unset: `virsh uri` answered qemu:///system; its path kept, tcp put in
    assert "live-migrating %s to %s (qemu+tcp://%s/system)" % (vm.name, n2, n2) in log, log
    # the options and migrateuri reached libvirt as typed parameters (%n: the target)
    for param in ("bandwidth=1000", "migrate_uri=tcp://%s:49152" % n2,
                  "parallel.connections=2"):
        assert param in log, (param, log)
    # --timeout 120 armed a switch the migration never needed (a no-OS guest converges)
    assert not re.search(r"guest suspended|switched to post-copy", log)
    assert "<uuid>" in vm.config.read_text()


def test_postcopy_switch_on_timeout(lab, make_vm):
    """--postcopy --timeout 1 --timeout-postcopy with a 1 MiB/s pre-copy: the agent switches
    the running job to post-copy after a second, as virsh does, and the guest arrives."""
    vm = make_vm(disks=1)
    a = vm.agent
    assert a(1, "start").rc == 0
    n1, n2 = lab.node_name(1), lab.node_name(2)
    move = {"migrate_source": n1, "migrate_target": n2}
    r = a(1, "migrate_to", meta=move, timeout_ms=120000,
          extra={"migrate_options": "--postcopy --timeout 1 --timeout-postcopy --bandwidth 1"})
    assert r.rc == 0, r
    switched = "switched to post-copy" in r.stderr
    assert a(2, "migrate_from", meta=move).rc == 0
    assert a(1, "stop").rc == 0
    assert vm.running_on() == [2] and vm.writer_ips() == [lab.node_ip(2)]
    assert a(2, "stop").rc == 0
    if not switched:
        # The lab's guests boot no OS: their memory is zero pages, which QEMU sends as
        # flags, so on an idle machine the whole pre-copy ends before the 1 s timeout
        # (seen in CI: "0.0 MiB remaining of 0.0 MiB", done in 1.2 s); under load the
        # switch happened. Say so loudly rather than pass.
        pytest.skip("POST-COPY SWITCH NOT EXERCISED: the migration finished before the "
                    "1 s timeout (guest memory all zero pages); the guest arrived")
