"""Definitions kept in Ceph on the real lab (issue 14, items 1-2): a VM whose domain XML is
only in Ceph (no file on any node) starts and live-migrates through the agent with
``config=ceph:POOL/NAME``; a change made with ``vmceph config`` applies at the next start
and shows in ``diff`` and ``log``; two concurrent puts: one wins, the other is told; a
probe and a stop on a node cut off from Ceph work from the node's local copy.

Run: VMCEPH_IT_LAB=<name> PYTHONPATH=lib:tests /usr/bin/python3 -m pytest -v \
         tests/integration/test_defstore.py
"""

import os
import threading
import time
import uuid

import pytest

from conftest import ROOT, Agent, all_members

OCF_SUCCESS, OCF_ERR_GENERIC, OCF_NOT_RUNNING = 0, 1, 7
LIB = str(ROOT / "lib")


def vmceph(lab, i, *args, input=None, env=None, timeout=90):
    e = {"PYTHONPATH": LIB}
    e.update(env or {})
    return lab.run(i, ["/usr/bin/python3", "-m", "vmceph"] + list(args), env=e, check=False,
                   timeout=timeout, input=input)


def ceph_args(lab):
    return ["--ceph-user", lab.ceph_user,
            "--ceph-keyring", "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user]


class CephVM:
    """A VM defined only in Ceph: its images, its definition ceph:POOL/NAME, an agent."""

    def __init__(self, lab, node_addresses, name):
        self.lab, self.name = lab, name
        self.images = ["%s-d0" % name]
        for img in self.images:
            lab.rbd_create(img, 64)
        self.uri = "ceph:%s/%s" % (lab.pool, name)
        self.xml = lab.make_domain_xml(name, self.images)
        self.agent = Agent(lab, "RBDVirtualDomain", name, {
            "config": self.uri, "hypervisor": "qemu:///system",
            "ceph_conf": "/etc/ceph/ceph.conf", "ceph_user": lab.ceph_user,
            "ceph_keyring": "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user,
            "node_addresses": node_addresses, "membership": all_members(lab),
            "migration_transport": "tcp", "force_stop": "true",
            "autoset_utilization_cpu": "false", "autoset_utilization_hv_memory": "false",
            "autoset_utilization_host_memory": "false"})

    def put(self, i, xml, *extra):
        path = "/run/%s-%s.xml" % (self.name, uuid.uuid4().hex[:6])   # the node's own /run
        self.lab.run(i, ["sh", "-c", "cat > %s" % path], input=xml)
        try:
            return vmceph(self.lab, i, "config", "put", self.uri, path, *(ceph_args(self.lab)
                                                                           + list(extra)))
        finally:
            self.lab.run(i, ["rm", "-f", path], check=False)

    def running_on(self):
        return [i for i in self.lab.indexes if self.lab.alive(i)
                and self.name in self.lab.virsh(i, "list", "--name").split()]

    def live_xml(self, i):
        return self.lab.virsh(i, "dumpxml", self.name)

    def cleanup(self):
        for i in self.lab.indexes:
            if self.lab.alive(i):
                self.lab.run(i, ["virsh", "-c", "qemu:///system", "destroy", self.name],
                             check=False, timeout=60)
        self.lab.run(self.lab.first_alive(), ["rados", "-p", self.lab.pool, "rm",
                                              "vmceph.domain." + self.name], check=False)
        for img in self.images:
            end = time.monotonic() + 90
            while self.lab.run(self.lab.first_alive(), ["rbd", "rm", "--no-progress", "%s/%s"
                               % (self.lab.pool, img)], check=False,
                               timeout=60).returncode != 0 and time.monotonic() < end:
                time.sleep(2)


@pytest.fixture
def cvm(lab, node_addresses):
    vm = CephVM(lab, node_addresses, "cv" + uuid.uuid4().hex[:6])
    yield vm
    vm.cleanup()


def no_file_anywhere(lab, vm):
    for i in lab.indexes:
        p = lab.run(i, ["sh", "-c", "grep -rls '<name>%s</name>' /etc /var/lib/libvirt "
                        "2>/dev/null || true" % vm.name], check=False)
        assert p.stdout.strip() == "", "a file defines %s on node %d: %s" % (
            vm.name, i, p.stdout)


def test_vm_defined_only_in_ceph_starts_migrates_and_changes_at_next_start(lab, cvm):
    r = cvm.put(1, cvm.xml, "-m", "first")
    assert r.returncode == 0 and "version 1 stored" in r.stdout, r.stderr
    no_file_anywhere(lab, cvm)
    a = cvm.agent
    assert a(1, "validate-all").rc == OCF_SUCCESS
    r = a(1, "start")
    assert r.rc == OCF_SUCCESS, r
    assert "definition %s: version 1" % cvm.uri in r.stderr
    assert cvm.running_on() == [1]
    lab.guest_write(1, cvm.name, 0)

    # live migration: the target has no file and no copy before migrate_from reads Ceph
    meta = {"migrate_source": lab.node_name(1), "migrate_target": lab.node_name(2)}
    r = a(1, "migrate_to", meta=meta, timeout_ms=120000)
    assert r.rc == OCF_SUCCESS, r
    r = a(2, "migrate_from", meta=meta)
    assert r.rc == OCF_SUCCESS, r
    assert a(1, "stop").rc == OCF_SUCCESS
    assert cvm.running_on() == [2]
    lab.guest_write(2, cvm.name, 0)
    assert a(2, "monitor", interval_ms=10000, depth=20).rc == OCF_SUCCESS

    # a change (more memory) stored while it runs: diff and log show it, the running
    # domain is untouched, the next start uses it
    changed = cvm.xml.replace("<memory unit='MiB'>64</memory>", "<memory unit='MiB'>96</memory>")
    assert changed != cvm.xml, "the lab's domain XML changed shape: adapt the test"
    r = cvm.put(3, changed, "-m", "more memory")
    assert r.returncode == 0 and "version 2 stored" in r.stdout, r.stderr
    d = vmceph(lab, 1, "config", "diff", cvm.uri, *ceph_args(lab))
    assert "-  <memory unit='MiB'>64</memory>" in d.stdout, d.stdout
    assert "+  <memory unit='MiB'>96</memory>" in d.stdout, d.stdout
    lg = vmceph(lab, 2, "config", "log", cvm.uri, *ceph_args(lab))
    lines = lg.stdout.splitlines()
    assert lines[0].startswith("v2") and "more memory" in lines[0], lg.stdout
    assert lines[1].startswith("v1") and "first" in lines[1], lg.stdout
    assert "65536" in cvm.live_xml(2) or "'KiB'>65536<" in cvm.live_xml(2)
    assert a(2, "stop").rc == OCF_SUCCESS
    r = a(3, "start")
    assert r.rc == OCF_SUCCESS, r
    assert "definition %s: version 2" % cvm.uri in r.stderr
    assert ">98304<" in cvm.live_xml(3), cvm.live_xml(3)     # 96 MiB in KiB
    assert a(3, "stop").rc == OCF_SUCCESS
    no_file_anywhere(lab, cvm)


def test_two_concurrent_puts_one_wins_the_other_is_told(lab, cvm):
    assert cvm.put(1, cvm.xml).returncode == 0
    variants = {2: cvm.xml.replace("<memory unit='MiB'>64</memory>",
                                   "<memory unit='MiB'>80</memory>"),
                3: cvm.xml.replace("<memory unit='MiB'>64</memory>",
                                   "<memory unit='MiB'>72</memory>")}
    results = {}

    def put(i):
        results[i] = cvm.put(i, variants[i], "--expect-version", "1")
    threads = [threading.Thread(target=put, args=(i,)) for i in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rcs = sorted(r.returncode for r in results.values())
    assert rcs == [0, 3], {i: (r.returncode, r.stdout, r.stderr) for i, r in results.items()}
    winner = next(i for i, r in results.items() if r.returncode == 0)
    loser = next(i for i, r in results.items() if r.returncode == 3)
    assert "changed meanwhile" in results[loser].stderr
    assert "NOT stored" in results[loser].stderr
    g = vmceph(lab, 1, "config", "get", cvm.uri, *ceph_args(lab))
    assert g.stdout == variants[winner]
    lg = vmceph(lab, 1, "config", "log", cvm.uri, *ceph_args(lab))
    assert [line.split()[0] for line in lg.stdout.splitlines()] == ["v2", "v1"]


def test_invalid_definition_is_not_stored(lab, cvm):
    r = cvm.put(1, cvm.xml.replace("<name>%s</name>" % cvm.name, "<name>other</name>"))
    assert r.returncode == 1 and "named 'other'" in r.stderr, r.stderr
    r = cvm.put(1, cvm.xml.replace("<devices>", "<devices><bogus/>"))
    assert r.returncode == 1 and "libvirt's schema" in r.stderr, r.stderr
    g = vmceph(lab, 1, "config", "get", cvm.uri, *ceph_args(lab))
    assert g.returncode == 1 and "no definition" in g.stderr


def test_probe_and_stop_with_ceph_unreachable_use_the_local_copy(lab, cvm):
    assert cvm.put(1, cvm.xml).returncode == 0
    a = cvm.agent
    assert a(2, "start").rc == OCF_SUCCESS
    # not even the remembered identity: the local copy must do
    lab.run(2, ["rm", "-f", "/run/resource-agents/vmceph-RBDVirtualDomain-%s.state"
                % cvm.name])
    lab.partition(2)
    try:
        # node 2 cannot reach a monitor quorum once its own monitor's lease ran out
        end = time.monotonic() + 90
        while True:
            r = vmceph(lab, 2, "config", "get", cvm.uri, "--timeout", "5", *ceph_args(lab))
            if r.returncode != 0 or time.monotonic() > end:
                break
            time.sleep(1)
        assert r.returncode == 1 and ("cannot reach" in r.stderr), r
        t0 = time.monotonic()
        r = a(2, "monitor", interval_ms=0)
        assert r.rc == OCF_SUCCESS, r
        r = a(2, "monitor", interval_ms=10000)
        assert r.rc == OCF_SUCCESS, r
        r = a(2, "stop", timeout_ms=60000)
        assert r.rc == OCF_SUCCESS, r
        assert time.monotonic() - t0 < 60
        assert cvm.running_on() == []
        r = a(2, "monitor", interval_ms=0)
        assert r.rc == OCF_NOT_RUNNING, r
        # a start needs the definition at that moment: refused, and says why
        r = a(2, "start", timeout_ms=30000)
        assert r.rc != OCF_SUCCESS
        assert "cannot be read from Ceph" in r.reason, r
        # a node that never ran it: no copy, nothing runs -> not running
        r = a(3, "monitor", interval_ms=0)
        assert r.rc == OCF_NOT_RUNNING, r
    finally:
        lab.heal(2)


def editor(lab, i, path, command):
    """An 'editor' inside node i: a script run with the file as its argument."""
    lab.run(i, ["sh", "-c", "cat > %s && chmod +x %s" % (path, path)],
            input="#!/bin/sh\n%s\n" % command)


def test_config_edit_stores_the_editors_result_and_keeps_it_on_conflict(lab, cvm):
    assert cvm.put(1, cvm.xml).returncode == 0
    # an "editor" that changes the memory (EDITOR is run with the file as its argument)
    editor(lab, 2, "/run/ed.sh", "sed -i \"s/MiB'>64</MiB'>80</\" \"$1\"")
    r = vmceph(lab, 2, "config", "edit", cvm.uri, "-m", "edited", *ceph_args(lab),
               env={"EDITOR": "/run/ed.sh"})
    assert r.returncode == 0 and "version 2 stored" in r.stdout, r
    g = vmceph(lab, 1, "config", "get", cvm.uri, *ceph_args(lab))
    assert "<memory unit='MiB'>80</memory>" in g.stdout
    lg = vmceph(lab, 3, "config", "log", cvm.uri, *ceph_args(lab))
    assert lg.stdout.splitlines()[0].startswith("v2") and "edited" in lg.stdout
    # an editor that is slow while someone else stores a version: the edit is refused
    # with status 3 and the edited text is kept
    editor(lab, 2, "/run/slow.sh", "sleep 4; sed -i \"s/MiB'>80</MiB'>88</\" \"$1\"")
    import threading
    box = {}
    t = threading.Thread(target=lambda: box.update(r=vmceph(
        lab, 2, "config", "edit", cvm.uri, *ceph_args(lab), env={"EDITOR": "/run/slow.sh"})))
    t.start()
    time.sleep(1.5)
    assert cvm.put(3, cvm.xml.replace("MiB'>64<", "MiB'>72<"), "-m", "meanwhile").returncode == 0
    t.join()
    r = box["r"]
    assert r.returncode == 3 and "changed meanwhile" in r.stderr, r
    assert "your edited text is kept in" in r.stderr
    kept = r.stderr.rsplit("kept in ", 1)[1].strip()
    assert "<memory unit='MiB'>88</memory>" in lab.run(2, ["cat", kept]).stdout
    g = vmceph(lab, 1, "config", "get", cvm.uri, *ceph_args(lab))
    assert "<memory unit='MiB'>72</memory>" in g.stdout
