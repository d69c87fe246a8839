"""fence_vmceph against the real lab: Ceph 16.2.15 with a mon and an OSD on every node
(hyperconverged: the fenced node's daemons share the address of its QEMUs), libvirt/QEMU.

The agent runs on node 1, as Pacemaker's fencer would, with a Ceph user holding exactly
the caps docs/fencing.md gives. Node 3 runs a VM writing to RBD and a plain librados
writer. Oracles (issue 12): once `off` returned, neither completes a write (the image's
data proves it, not only the error), while node 3's OSD stays up and in and all three
monitors stay in quorum; `status` says OFF; `on` keeps the still-living stale writer out
and lets a new client of node 3 write. Without quorum `off` fails within ceph_timeout.
Last, node 3 crashes and `off` succeeds once the surviving monitors re-elected.
"""

import json
import re
import time

import pytest

from conftest import AGENT_DIR

pytestmark = pytest.mark.lab

FENCE = str(AGENT_DIR / "fence" / "fence_vmceph")
TARGET = 3
CAPS_MON = ('allow r, allow command "osd blocklist", allow command "osd blocklist ls", '
            'allow command "osd down", allow command "config-key set", '
            'allow command "config-key get", allow command "config-key rm", '
            'allow command sessions')
CAPS_OSD = "allow *"

WRITER = r"""
import rados, sys, time
c = rados.Rados(conffile="/etc/ceph/ceph.conf", rados_id="vmceph",
                conf={"keyring": "/etc/ceph/ceph.client.vmceph.keyring",
                      "rados_osd_op_timeout": "3"})
c.connect()
print("ADDR", c.get_addrs(), flush=True)
io = c.open_ioctx(sys.argv[1])
while True:
    t = time.time()
    try:
        io.write_full(sys.argv[2], b"%f" % t)
        r = "ok"
    except Exception as e:
        r = type(e).__name__
    print("%.3f %s" % (t, r), flush=True)
    time.sleep(0.1)
"""

ONE_WRITE = r"""
import rados, sys
c = rados.Rados(conffile="/etc/ceph/ceph.conf", rados_id="vmceph",
                conf={"keyring": "/etc/ceph/ceph.client.vmceph.keyring",
                      "rados_osd_op_timeout": "10"})
c.connect()
io = c.open_ioctx(sys.argv[1])
io.write_full(sys.argv[2], b"new client")
print(io.read(sys.argv[2]).decode())
"""


@pytest.fixture(scope="module")
def fencer(lab, shared_dir):
    """A client.fence user with the documented caps; returns a runner of the agent."""
    keyring = "/etc/ceph/ceph.client.fence.keyring"
    for i in lab.indexes:
        lab.run(i, ["ceph", "auth", "get-or-create", "client.fence", "mon", CAPS_MON,
                    "osd", CAPS_OSD, "-o", keyring], timeout=60)
    addrs = " ".join("%s=%s" % (lab.node_name(i), lab.node_ip(i)) for i in lab.indexes)

    def run(action, node=None, extra="", on=1):
        stdin = ("action=%s\nplug=%s\nceph_user=fence\nceph_keyring=%s\nnode_addresses=%s\n"
                 "verbose=1\n%s" % (action, node or lab.node_name(TARGET), keyring, addrs, extra))
        t0 = time.monotonic()
        p = lab.run(on, [FENCE], input=stdin, check=False, timeout=90)
        p.elapsed = time.monotonic() - t0
        assert "Traceback" not in p.stderr, p.stderr
        return p
    return run


def fenced_line(stderr):
    m = re.search(r"fenced \S+: .* in ([0-9.]+) s \(entries ([0-9.]+) s", stderr)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def osd_of(lab, i):
    dump = json.loads(lab.ceph(1, "osd", "dump", "-f", "json"))
    for o in dump["osds"]:
        if any(a["addr"].split(":")[0] == lab.node_ip(i)
               for a in o["public_addrs"]["addrvec"]):
            return o
    raise AssertionError("no OSD on node %d" % i)


def quorum(lab):
    return json.loads(lab.ceph(1, "quorum_status", "-f", "json"))["quorum_names"]


def first_byte(lab, image):
    out = lab.run(1, "rbd export --no-progress %s/%s - | head -c 1 | od -An -tx1"
                  % (lab.pool, image), timeout=60).stdout
    return out.strip()


def qemu_io(lab, i, domain, command, timeout=20):
    """A qemu-io command on the domain's librbd handle: 'ok', 'error: ...' or 'hang'.
    The lab's disks use cache='writeback': a write completes in librbd's cache, so only
    a flush (or the image's data) tells whether it reached the OSDs."""
    hmp = 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "%s"' % command
    try:
        p = lab.run(i, ["virsh", "-c", "qemu:///system", "qemu-monitor-command", domain,
                        "--hmp", hmp], check=False, timeout=timeout)
    except Exception as e:  # CommandTimeout: the write never completed
        return "hang (%s)" % type(e).__name__
    out = (p.stdout + p.stderr).strip()
    return "ok" if p.returncode == 0 and not out else "error: " + out


def writer_log(lab, i):
    with open(lab.node_dir(i, "log", "fencewriter.log")) as f:
        return [l.split() for l in f if l[0].isdigit()]


def test_off_fences_a_running_vm_and_spares_the_daemons(lab, make_vm, fencer):
    vm = make_vm(disks=1)
    assert vm.agent(TARGET, "start").rc == 0
    lab.guest_write(TARGET, vm.name, 0, pattern=0x22)
    assert vm.writer_ips(0) == [lab.node_ip(TARGET)]
    lab.run(TARGET, ["sh", "-c", "cat > /tmp/fencewriter.py"], input=WRITER)
    lab.spawn(TARGET, "fencewriter", "exec /usr/bin/python3 /tmp/fencewriter.py %s fw3"
              % lab.pool)
    time.sleep(2)
    assert any(r[1] == "ok" for r in writer_log(lab, TARGET)), "the writer writes before"

    p = fencer("status")
    assert p.returncode == 0 and "Status: ON" in p.stdout, p.stderr
    p = fencer("monitor")
    assert p.returncode == 0, p.stderr
    p = fencer("list")
    assert p.returncode == 0 and sorted(p.stdout.split()) == sorted(
        "%s,%s" % (lab.node_name(i), lab.node_name(i)) for i in lab.indexes), p.stdout
    assert fencer("validate-all").returncode == 0

    p = fencer("off")
    returned = time.time()
    assert p.returncode == 0 and "Success" in p.stdout, p.stderr
    took, entries = fenced_line(p.stderr)
    print("\nfence_vmceph off: process %.2f s, fence %.2f s (entries committed %.2f s)"
          % (p.elapsed, took, entries))

    # the VM's QEMU cannot write any more, and nothing it tried landed
    wrote = qemu_io(lab, TARGET, vm.name, "write -P 0x33 0 4096")
    flushed = qemu_io(lab, TARGET, vm.name, "flush")
    print("qemu-io after off: write %s, flush %s (the disk is cache='writeback': librbd "
          "acknowledges both from its cache; the image's data is the oracle)" % (wrote, flushed))
    time.sleep(3)   # librbd writes dirty cache back after rbd_cache_max_dirty_age (1 s)
    assert first_byte(lab, vm.images[0]) == "22", "a fenced write reached the image"
    assert vm.clients(0)["watchers"] == [], "the OSDs dropped the fenced QEMU's watch"
    # the librados writer: no write that started after off returned completed
    time.sleep(1.5)
    late = [r for r in writer_log(lab, TARGET) if r[1] == "ok" and float(r[0]) > returned]
    assert late == [], late

    # the node's own daemons: OSD up and in, its mon in quorum
    o = osd_of(lab, TARGET)
    assert o["up"] == 1 and o["in"] == 1, o
    assert sorted(quorum(lab)) == sorted(lab.node_name(i) for i in lab.indexes)

    p = fencer("status")
    assert p.returncode == 2 and "Status: OFF" in p.stdout, (p.stdout, p.stderr)
    p = fencer("off")                      # idempotent
    assert p.returncode == 0 and "Already OFF" in p.stdout, p.stdout

    # on: after the VM is gone. The librados writer still lives: it must stay out.
    vm.destroy_everywhere()
    p = fencer("on")
    assert p.returncode == 0, p.stderr
    print("fence_vmceph on: %.2f s; %s" % (p.elapsed, [l for l in p.stderr.splitlines()
                                                       if "unfenced" in l]))
    addr = open(lab.node_dir(TARGET, "log", "fencewriter.log")).readline().split()[1]
    assert "kept blocklisted" in p.stderr and re.sub(r"[\[\]]|v2:|any:", "", addr).split(",")[0] \
        in p.stderr, p.stderr
    assert fencer("status").returncode == 0
    since = time.time()
    time.sleep(2)
    late = [r for r in writer_log(lab, TARGET) if r[1] == "ok" and float(r[0]) > since]
    assert late == [], "the stale writer got its access back"
    # a new client of the node writes
    lab.run(TARGET, ["sh", "-c", "cat > /tmp/onewrite.py"], input=ONE_WRITE)
    p = lab.run(TARGET, ["/usr/bin/python3", "/tmp/onewrite.py", lab.pool, "fw3new"],
                check=False, timeout=60)
    assert p.returncode == 0 and "new client" in p.stdout, p.stderr
    # and so does a new VM of the node
    vm2 = make_vm(disks=1)
    assert vm2.agent(TARGET, "start").rc == 0
    lab.guest_write(TARGET, vm2.name, 0, pattern=0x44)


def test_off_with_quorum_lost_fails_fast(lab, fencer):
    """Without monitor quorum nothing can be committed: fail within ceph_timeout."""
    lab.stop_mon(2)
    lab.stop_mon(3)
    try:
        p = fencer("off", extra="ceph_timeout=5\n")
        print("\noff without quorum: rc %d in %.2f s" % (p.returncode, p.elapsed))
        assert p.returncode != 0 and "Success" not in p.stdout
        assert p.elapsed < 15
    finally:
        lab.start_mon(2)
        lab.start_mon(3)
        lab.wait_ceph_healthy(timeout=120)


def test_off_after_a_crash(lab, fencer):
    """A crash takes node 3's mon too: the survivors commit nothing until they re-elect
    (~14 s, mon lease); off retries within ceph_timeout and then succeeds. The dead OSD
    ends down (marked by its peers' reports, or by off when it stays silent)."""
    lab.crash(TARGET)
    try:
        t0 = time.monotonic()
        p = fencer("off")       # default ceph_timeout (30 s): covers the ~14 s re-election
        print("\noff of a crashed node: rc %d, %.2f s after the crash\n%s"
              % (p.returncode, time.monotonic() - t0,
                 "\n".join(l for l in p.stderr.splitlines() if "DEBUG" not in l)))
        assert p.returncode == 0, p.stderr
        assert osd_of(lab, TARGET)["up"] == 0
    finally:
        # the lab is shared with the tests that follow (test_rbdvd uses node 3): unfence
        # while the node is down, as Pacemaker does before it rejoins, then boot it again
        lab.wait_quorum(2, timeout=60)
        on = fencer("on")
        assert on.returncode == 0, on.stderr
        lab.start_node(TARGET)
        lab.wait_ceph_healthy(timeout=180)
