"""Tests of the lab itself (tests/vmlab): it must really give us three hyperconverged nodes.

These bring up real Ceph, libvirt/QEMU and Pacemaker in namespaces on this machine: root
only, ~1-2 minutes per class, ~1.4 GiB of memory at most. Run:

    cd tests && /usr/bin/python3 -m pytest -m lab integration/test_vmlab.py -v

The tests of a class run in order against one lab and each builds on the previous one.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> import vmlab

from vmlab import FENCE_ID, Lab, LabError  # noqa: E402
from vmlab import netns  # noqa: E402
from vmlab.util import wait_until  # noqa: E402

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(not all(shutil.which(t, path="/usr/sbin:/usr/bin") for t in
                               ("ceph-mon", "ceph-osd", "libvirtd", "qemu-system-x86_64")),
                       reason="Ceph/libvirt/QEMU packages not installed"),
]

DOMAIN = "selftest-vm"
IMAGE = "selftest-img"


def timed(what, fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    print(f"TIMING {what}: {time.monotonic() - t0:.2f}s")
    return result


def watcher_ips(lab, image):
    return [w["addr"].split(":")[0] for w in lab.image_clients(image)["watchers"]]


def lab_inodes(lab):
    """The netns inodes of the lab's nodes, recorded before down (to look for survivors after)."""
    return {i: netns.netns_inode(lab.netns_name(i)) for i in lab.indexes}


def assert_nothing_left(lab, inodes):
    assert not os.path.exists(lab.state_dir)
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in names if n.startswith(lab.netns_prefix + "-")] == []
    for i, inode in inodes.items():
        assert netns.pids_in_netns(inode) == [], f"processes left in node {i}'s netns"
    for pid in netns.all_pids():
        try:
            mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        assert lab.state_dir + "/" not in mounts, f"process {pid} has a mount from the state dir"
    assert lab.leftovers() == {"netns": [], "processes": [], "mounts": []}


@pytest.fixture(scope="class")
def lab():
    the_lab = Lab(name="selftest", nodes=3, pacemaker=False)
    the_lab.down()  # leftovers of an earlier, killed run
    yield the_lab
    the_lab.down()


@pytest.fixture(scope="class")
def pcmk_lab():
    the_lab = Lab(name="selftest-pcmk", nodes=3, pacemaker=True, token_ms=1000)
    the_lab.down()
    yield the_lab
    the_lab.down()


class TestCephLibvirtLab:
    def test_up(self, lab):
        t0 = time.monotonic()
        lab.up()
        took = time.monotonic() - t0
        print(f"TIMING up (no pacemaker): {took:.1f}s")
        assert took < 60, "up without Pacemaker should take well under a minute"
        assert all(lab.alive(i) for i in lab.indexes)
        with pytest.raises(LabError, match="already up"):
            lab.up()

    def test_topology(self, lab):
        assert [lab.node_name(i) for i in lab.indexes] == ["n1", "n2", "n3"]
        assert lab.run(2, ["hostname"]).stdout.strip() == "n2"
        addresses = lab.run(1, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
        assert f"{lab.node_ip(1)}/24" in addresses
        assert lab.mon_hosts == [f"{lab.node_ip(i)}:6789" for i in lab.indexes]
        assert lab.libvirt_uri(2) == f"qemu+tcp://{lab.node_ip(2)}/system"
        # nodes reach each other over the bridge; the host has none of the lab's addresses
        lab.run(1, ["ping", "-c", "1", "-W", "2", lab.node_ip(3)], timeout=10)
        host = Path("/proc/net/fib_trie").read_text()
        assert lab.node_ip(1) not in host
        # no outgoing connection takes a live-migration port as its own (netns.py)
        reserved = lab.run(2, ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).stdout
        assert reserved.strip() == "49152-49215"

    def test_ceph_healthy_with_cephx(self, lab):
        status = lab.wait_ceph_healthy(timeout=60)
        assert status["health"] == "HEALTH_OK"
        assert sorted(status["quorum_names"]) == ["n1", "n2", "n3"]
        assert status["num_up_osds"] == 3
        pool = lab.ceph(1, "osd", "pool", "get", "rbd", "all", "-f", "json")
        assert '"size":3' in pool and '"min_size":2' in pool
        caps = lab.ceph(1, "auth", "get", "client.vmceph")
        assert 'caps mon = "profile rbd"' in caps
        assert 'caps osd = "profile rbd pool=rbd"' in caps
        assert 'caps mgr = "profile rbd pool=rbd"' in caps
        # cephx is on: without a key nobody gets in
        no_key = lab.run(2, ["ceph", "--connect-timeout", "5", "--keyring", "/dev/null", "health"],
                         timeout=30, check=False)
        assert no_key.returncode != 0

    def test_restricted_user(self, lab):
        lab.rbd_create(IMAGE, size_mb=64)
        for i in lab.indexes:
            out = lab.run(i, ["rbd", "--id", "vmceph", "ls", "rbd"], timeout=30).stdout
            assert IMAGE in out.split()
        denied = lab.run(2, ["ceph", "--connect-timeout", "5", "--id", "vmceph", "osd", "pool",
                             "create", "forbidden"], timeout=30, check=False)
        assert denied.returncode != 0

    def test_libvirt_secret_on_every_node(self, lab):
        for i in lab.indexes:
            assert lab.secret_uuid in lab.virsh(i, "secret-list")

    def test_vm_on_node1_writes_through_rbd(self, lab):
        xml = lab.make_domain_xml(DOMAIN, [IMAGE])
        lab.run(1, ["sh", "-c", f"cat > /run/{DOMAIN}.xml"], input=xml)
        lab.virsh(1, "define", f"/run/{DOMAIN}.xml")
        timed("virsh start", lab.virsh, 1, "start", DOMAIN)
        took = lab.guest_write(1, DOMAIN)
        print(f"TIMING first guest write: {took:.3f}s")
        clients = lab.image_clients(IMAGE)
        ip1 = lab.node_ip(1)
        assert [w["addr"].split(":")[0] for w in clients["watchers"]] == [ip1]
        assert [lk["addr"].split(":")[0] for lk in clients["lockers"]] == [ip1]
        assert clients["lockers"][0]["tag"] == "internal"

    def test_live_migration_moves_the_watcher(self, lab):
        timed("live migration n1->n2", lab.virsh, 1, "migrate", "--live", "--p2p", "--persistent",
              "--undefinesource", DOMAIN, lab.libvirt_uri(2))
        assert DOMAIN not in lab.virsh(1, "list", "--all", "--name").split()
        assert lab.virsh(2, "domstate", DOMAIN).strip() == "running"
        ip2 = lab.node_ip(2)
        # the source QEMU closes its image (and unwatches) as it quits, just after the job
        wait_until(lambda: watcher_ips(lab, IMAGE) == [ip2], timeout=10,
                   what="the watcher to be node 2's QEMU only")
        lab.guest_write(2, DOMAIN, pattern=0x33)
        clients = lab.image_clients(IMAGE)
        assert [lk["addr"].split(":")[0] for lk in clients["lockers"]] == [ip2]

    def test_crash_and_rejoin(self, lab):
        inode = netns.netns_inode(lab.netns_name(2))
        qemu_pid = int(lab.run(2, ["cat", f"/run/libvirt/qemu/{DOMAIN}.pid"]).stdout)
        timed("crash n2", lab.crash, 2)
        assert not lab.alive(2)
        assert netns.pids_in_netns(inode) == []
        assert not netns.pid_alive(qemu_pid), "the node's QEMU must die with it"
        with pytest.raises(LabError, match="is down"):
            lab.run(2, ["true"])
        timed("mon quorum down to 2 after crash", lab.wait_quorum, 2, timeout=60)
        t0 = time.monotonic()
        lab.start_node(2)
        status = lab.wait_ceph_healthy(timeout=120)
        print(f"TIMING start_node n2 -> HEALTH_OK: {time.monotonic() - t0:.1f}s")
        assert sorted(status["quorum_names"]) == ["n1", "n2", "n3"]
        # a reboot keeps the persistent definition; the domain itself died with the node
        assert lab.virsh(2, "domstate", DOMAIN).strip() == "shut off"
        assert lab.run(2, ["ceph", "--id", "vmceph", "-s"], timeout=30).returncode == 0

    def test_stop_and_start_mon(self, lab):
        lab.stop_mon(3)
        timed("quorum 2 after stop_mon", lab.wait_quorum, 2, timeout=60)
        lab.start_mon(3)
        timed("quorum 3 after start_mon", lab.wait_quorum, 3, timeout=60)

    def test_down_leaves_nothing(self, lab):
        lab.virsh(2, "undefine", DOMAIN)
        inodes = lab_inodes(lab)
        timed("down", lab.down)
        assert_nothing_left(lab, inodes)
        lab.down()  # a second down is harmless


class TestPacemakerLab:
    def test_up_with_pacemaker(self, pcmk_lab):
        lab = pcmk_lab
        t0 = time.monotonic()
        lab.up()
        took = time.monotonic() - t0
        print(f"TIMING up (with pacemaker): {took:.1f}s")
        assert took < 90
        assert lab.pacemaker_nodes() == {"n1": "online", "n2": "online", "n3": "online"}

    def test_cluster_config(self, pcmk_lab):
        lab = pcmk_lab
        deadtime = lab.run(1, ["crm_attribute", "-t", "crm_config", "-n", "dc-deadtime",
                               "-G", "-q"]).stdout
        assert deadtime.strip() == "2s"
        # the fence agent and the OCF provider exist inside the nodes only
        assert "fence_vmlab" in lab.run(2, ["stonith_admin", "--list-installed"]).stdout
        assert "n1" in lab.run(2, ["fence_vmlab", "-o", "list", "-s", lab.state_dir]).stdout
        assert not os.path.exists("/usr/sbin/fence_vmlab")
        target = lab.run(3, ["readlink", "-f", "/usr/lib/ocf/resource.d/vmceph"]).stdout.strip()
        assert target == os.path.join(lab.project_root, "agents")

    def test_crash_is_fenced_and_node_rejoins(self, pcmk_lab):
        lab = pcmk_lab
        t0 = time.time()
        lab.crash(3)
        lab.wait_pacemaker_online(2, timeout=60)
        wait_until(lambda: lab.fenced_since(3, t0), timeout=60, what="fencing of n3")
        print(f"TIMING crash -> fenced by Pacemaker: {time.time() - t0:.1f}s")
        t1 = time.monotonic()
        lab.start_node(3)
        lab.wait_pacemaker_online(3, timeout=90)
        lab.wait_ceph_healthy(timeout=120)
        print(f"TIMING start_node n3 -> online + HEALTH_OK: {time.monotonic() - t1:.1f}s")

    def test_partitioned_node_is_fenced(self, pcmk_lab):
        lab = pcmk_lab
        t0 = time.monotonic()
        lab.partition(2)
        wait_until(lambda: not lab.alive(2), timeout=60, what="n2 fenced after partition")
        print(f"TIMING partition -> fenced: {time.monotonic() - t0:.1f}s")
        lab.heal(2)
        lab.start_node(2)
        lab.wait_pacemaker_online(3, timeout=90)
        lab.wait_fence_device(timeout=60)

    def test_down_leaves_nothing(self, pcmk_lab):
        inodes = lab_inodes(pcmk_lab)
        timed("down (pacemaker)", pcmk_lab.down)
        assert_nothing_left(pcmk_lab, inodes)


def test_fence_agent_metadata():
    agent = Path(__file__).resolve().parents[1] / "vmlab" / "fence_vmlab"
    out = subprocess.run([sys.executable, str(agent), "-o", "metadata"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    assert "<resource-agent name=\"fence_vmlab\"" in out and "state_dir" in out


def test_failed_up_is_torn_down(tmp_path):
    """A lab whose up fails half-way leaves nothing behind but its logs."""
    lab = Lab(name="selftest-fail", nodes=1, state_root=str(tmp_path))
    lab.down()

    def boom():
        raise LabError("injected failure after the nodes booted")
    lab._setup_libvirt = lambda i: boom()
    with pytest.raises(LabError, match="injected failure"):
        lab.up()
    assert lab.leftovers() == {"netns": [], "processes": [], "mounts": []}
    assert os.path.exists(os.path.join(lab.state_dir, "lab.log"))
    lab.down()
    assert not os.path.exists(lab.state_dir)
    assert FENCE_ID  # exported for tests that configure their own CIB
