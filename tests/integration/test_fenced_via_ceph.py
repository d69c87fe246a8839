"""A node fenced through Ceph is GONE for RBDVirtualDomain's start (issue 12, item 3), on the
real lab (Ceph 16.2.15, libvirt/QEMU, three namespaced nodes; no Pacemaker: membership comes
from the agent's ``membership`` parameter, node 3 "unclean" as Pacemaker shows a lost node
whose fencing is pending).

Node 3 runs a VM that has written its disk. Then:
1. a fence_vmceph record of node 3 alone (no blocklist entry, as 'on' leaves it when it
   could not remove the record) does not make node 3 GONE: the start on node 2 is refused;
2. fence_vmceph off node 3 (run on node 1, as the fencer would), while node 3 and its QEMU
   stay alive: the start on node 2 classifies node 3 as fenced through Ceph, adds no
   blocklist entry of its own, breaks the lock, starts, and its log says why; the guest on
   node 2 writes;
3. the stale QEMU left on node 3 is stopped by the agent's stop (what Pacemaker runs for
   multiple-active=stop_unexpected after its probe finds it), and the image keeps node 2's
   data.
CephHealth, meanwhile, says red on node 3 (its clients cannot do I/O, though its monitors
answer) and green on node 2.
"""

import json
import time

import pytest

from conftest import AGENT_DIR
from test_fence_vmceph import CAPS_MON, CAPS_OSD, FENCE, first_byte, qemu_io

pytestmark = pytest.mark.lab

STALE, NEW = 3, 2
RECORD_KEY = "vmceph/fence/%s"


def blocklist(lab):
    out = lab.ceph(1, "osd", "blocklist", "ls", "-f", "json").strip()
    entries, _ = json.JSONDecoder().raw_decode(out) if out else ([], 0)
    return sorted(e["addr"] for e in entries)


@pytest.fixture
def fence(lab):
    """fence_vmceph run on node 1 with the documented caps; unfences node 3 at the end
    (the lab is shared with the tests that follow)."""
    keyring = "/etc/ceph/ceph.client.fence.keyring"
    for i in lab.indexes:
        lab.run(i, ["ceph", "auth", "get-or-create", "client.fence", "mon", CAPS_MON,
                    "osd", CAPS_OSD, "-o", keyring], timeout=60)
    addrs = " ".join("%s=%s" % (lab.node_name(i), lab.node_ip(i)) for i in lab.indexes)

    def run(action):
        stdin = ("action=%s\nplug=%s\nceph_user=fence\nceph_keyring=%s\nnode_addresses=%s\n"
                 % (action, lab.node_name(STALE), keyring, addrs))
        return lab.run(1, [FENCE], input=stdin, check=False, timeout=90)
    yield run
    on = run("on")
    assert on.returncode == 0, on.stderr
    lab.run(1, ["ceph", "config-key", "rm", RECORD_KEY % lab.node_name(STALE)], check=False,
            timeout=30)


def health_of(lab, shared_dir, i):
    """CephHealth's start on node i, with stub Pacemaker tools (this lab runs none) that
    record what it publishes: (colour, stderr)."""
    stubs = shared_dir / "fenced-stubs"
    stubs.mkdir(exist_ok=True)
    log = stubs / "calls.log"
    log.write_text("")
    for tool in ("attrd_updater", "crm_attribute"):
        (stubs / tool).write_text('#!/bin/sh\necho "%s $*" >> %s\n'
                                  'case "$*" in *" -G "*) exit 6;; esac\n' % (tool, log))
        (stubs / tool).chmod(0o755)
    env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "ceph-health-fenced",
           "OCF_RESOURCE_TYPE": "CephHealth", "OCF_RESOURCE_PROVIDER": "vmceph",
           "OCF_RESKEY_CRM_meta_timeout": "30000", "OCF_RESKEY_dampen": "0s",
           "OCF_RESKEY_ceph_conf": "/etc/ceph/ceph.conf", "OCF_RESKEY_ceph_user": lab.ceph_user,
           "OCF_RESKEY_ceph_keyring": "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user,
           "OCF_RESKEY_address_attribute": "",
           # only what this node can do counts here, not cluster-wide warnings
           "OCF_RESKEY_warn_color": "green", "OCF_RESKEY_err_color": "green",
           "PATH": "%s:/usr/sbin:/usr/bin:/sbin:/bin" % stubs}
    r = lab.run(i, [str(AGENT_DIR / "CephHealth"), "start"], env=env, check=False,
                timeout=60)
    assert r.returncode == 0, r.stderr
    # "attrd_updater -n NAME -U|-B VALUE ...": the last value set per attribute
    sets = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("attrd")]
    last = {c[2]: c[4] for c in sets if c[3] in ("-U", "-B")}
    health_of.last = last
    return last["#health-ceph"], r.stderr


def test_start_after_fence_vmceph_only_breaks_the_lock(lab, make_vm, fence, shared_dir):
    t_test = time.monotonic()
    vm = make_vm(disks=1, force_stop="true")
    lost = " ".join("%s=%s" % (lab.node_name(i), "unclean" if i == STALE else "member")
                    for i in lab.indexes)
    assert vm.agent(STALE, "start").rc == 0
    lab.guest_write(STALE, vm.name, 0, pattern=0x22)
    holder = vm.clients(0)["lockers"][0]["addr"]
    assert holder.split(":")[0] == lab.node_ip(STALE)

    # 1. a record alone proves nothing
    stale_ip = lab.node_ip(STALE)
    lab.ceph(1, "config-key", "set", RECORD_KEY % lab.node_name(STALE), json.dumps(
        {"node": lab.node_name(STALE), "ips": [stale_ip],
         "host_entries": ["%s:0/0" % stale_ip], "time": time.time()}))
    r = vm.agent(NEW, "start", extra={"membership": lost})
    assert r.rc == 1, r
    assert "not yet fenced" in r.reason and lab.node_name(STALE) in r.reason, r.reason
    assert "fenced through Ceph" not in r.stderr
    lab.ceph(1, "config-key", "rm", RECORD_KEY % lab.node_name(STALE))

    # 2. fenced through Ceph while node 3 and its QEMU live on
    p = fence("off")
    assert p.returncode == 0 and "Success" in p.stdout, p.stderr
    before = blocklist(lab)
    assert "%s:0/0" % stale_ip in before, before
    assert STALE in vm.running_on(), "the stale QEMU is still there"
    colour, err = health_of(lab, shared_dir, STALE)
    assert colour == "red" and "this node is fenced through Ceph (%s:0/0" % stale_ip in err, err
    # and it asks Pacemaker to unfence it (CephHealth._ask_unfencing)
    assert health_of.last.get("#node-unfenced") == "0", health_of.last
    assert health_of(lab, shared_dir, NEW)[0] == "green"
    assert "#node-unfenced" not in health_of.last, health_of.last
    r = vm.agent(NEW, "start", extra={"membership": lost})
    assert r.rc == 0, r
    print("\nstart on node %d after fence_vmceph off node %d: %.2f s" % (NEW, STALE, r.elapsed))
    for line in r.stderr.splitlines():
        if "fenced" in line or "lock" in line or "OSD map" in line:
            print("  " + line[-300:])
    assert "counts as fenced: fenced through Ceph: host-wide entry %s:0/0" % stale_ip \
        in r.stderr, r.stderr
    assert "already blocklisted host-wide" in r.stderr and "not blocklisting %s again" \
        % holder in r.stderr
    assert "broke the exclusive lock of %s" % vm.spec(0) in r.stderr, r.stderr
    assert blocklist(lab) == before, "the start added no blocklist entry of its own"
    lab.guest_write(NEW, vm.name, 0, pattern=0x55)
    assert sorted(vm.running_on()) == sorted([STALE, NEW])   # the stale QEMU, cut off

    # 3. the stale QEMU is stopped without harm; node 2's data stays. First the probe a
    # rejoining node gets: it must not say "not running" while the QEMU is there (it is
    # running, or failed if the guest paused on the I/O errors), so Pacemaker sees the VM
    # active twice and, with multiple-active=stop_unexpected, stops it there only.
    r = vm.agent(STALE, "monitor")
    assert r.rc in (0, 1), r
    r = vm.agent(STALE, "stop")
    assert r.rc == 0, r
    assert vm.running_on() == [NEW]
    assert qemu_io(lab, NEW, vm.name, "flush") == "ok"   # the disk is cache='writeback'
    assert first_byte(lab, vm.images[0]) == "55"
    assert vm.agent(NEW, "monitor", interval_ms=10000).rc == 0
    print("test took %.1f s" % (time.monotonic() - t_test))
