"""Fixtures of the integration tests: a real lab (Ceph with 3 monitors, libvirtd + QEMU on
three namespaced nodes with distinct addresses), and a runner that invokes an agent inside a
node exactly as pacemaker-execd would (environment variables, exit code, stderr).

The lab is brought up once per test session by the tests' own code (tests/vmlab) and torn
down at the end. Without root, or without the Debian packages, the tests skip loudly; CI
runs as root after `make deps`, so there they run.
"""

import os
import shlex
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_DIR = Path(os.environ.get("VMCEPH_AGENT_DIR") or ROOT / "agents")
OCF_ROOT = "/usr/lib/ocf"
# VMCEPH_IT_LAB names the lab (default "it"): two runs under one name would tear each
# other's nodes down, so a second concurrent run must pick another name.
LAB_NAME = os.environ.get("VMCEPH_IT_LAB", "it")


def _lab_prerequisites():
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, bridges)"
    for prog in ("/usr/bin/ceph-mon", "/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64"):
        if not os.path.exists(prog):
            return "%s missing: run `make deps`" % prog
    return None


def pytest_collection_modifyitems(items):
    """The modules with labs of their own (the Pacemaker labs of test_defstore_pacemaker.py
    and test_recovery_pacemaker.py) run after every module of the session lab, which is
    down by then: one lab at a time on the machine."""
    from vmlab.pytest_labs import own_labs_last
    own_labs_last(items, "lab", Path(__file__).parent)


def _session_closer():
    from vmlab.pytest_labs import SessionCloser
    return SessionCloser("lab")


SESSION = _session_closer()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    SESSION.after_test(item)


@pytest.fixture(scope="session")
def lab():
    why = _lab_prerequisites()
    if why:
        pytest.skip("INTEGRATION TESTS NOT RUN: " + why)
    from vmlab import Lab
    # VMCEPH_AGENT_DIR set (packaging/check-installed's hook): test the installed agents,
    # so the nodes must see the host's /usr/lib/ocf/resource.d/vmceph, not the checkout's
    lab = Lab(name=LAB_NAME, nodes=3, pacemaker=False, project_root=str(ROOT),
              checkout_agents="VMCEPH_AGENT_DIR" not in os.environ)
    from vmlab.owner import owning
    with owning(lab):  # a second run under this name stops here instead of killing this one
        lab.down()  # leftovers of an earlier, interrupted run
        SESSION.register(lab.down)   # after the last test that uses it
        try:
            lab.up()
            yield lab
        finally:
            SESSION.close_if_open()


class Result:
    def __init__(self, rc, stdout, stderr, elapsed):
        self.rc, self.stdout, self.stderr, self.elapsed = rc, stdout, stderr, elapsed
        reasons = [l[len("ocf-exit-reason:"):] for l in stderr.splitlines()
                   if l.startswith("ocf-exit-reason:")]
        self.reason = reasons[-1] if reasons else ""

    def __repr__(self):
        return "Result(rc=%d, %.2fs, reason=%r)\n--- stderr:\n%s" % (
            self.rc, self.elapsed, self.reason, self.stderr[-3000:])


class Agent:
    """Runs ocf:vmceph:<name> inside a lab node with OCF_* variables, like pacemaker-execd.
    ``provider`` another than vmceph runs the installed ocf:<provider>:<name> (e.g.
    heartbeat's VirtualDomain, to compare with)."""

    def __init__(self, lab, name, instance, params, provider="vmceph"):
        self.lab = lab
        self.provider = provider
        self.path = str(AGENT_DIR / name) if provider == "vmceph" else \
            "%s/resource.d/%s/%s" % (OCF_ROOT, provider, name)
        self.instance = instance
        self.params = dict(params)

    def __call__(self, node, action, interval_ms=0, depth=None, timeout_ms=60000, meta=None,
                 extra=None, drop=(), argv_prefix=()):
        env = {"OCF_ROOT": OCF_ROOT, "OCF_RESOURCE_INSTANCE": self.instance,
               "OCF_RESOURCE_TYPE": os.path.basename(self.path),
               "OCF_RESOURCE_PROVIDER": self.provider,
               "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
               "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
               "HA_debug": "1"}
        if depth is not None:
            # as pacemaker-execd: only when the operation has OCF_CHECK_LEVEL (validate-all
            # at level 0 checks the values only, nothing of this node)
            env["OCF_CHECK_LEVEL"] = str(depth)
        params = dict(self.params, **(extra or {}))
        for k, v in params.items():
            if k not in drop:
                env["OCF_RESKEY_" + k] = str(v)
        for k, v in (meta or {}).items():
            env["OCF_RESKEY_CRM_meta_" + k] = str(v)
        t0 = time.monotonic()
        # argv_prefix: a wrapper that runs the agent (e.g. one that kills it mid-action)
        p = self.lab.run(node, list(argv_prefix) + [self.path, action], env=env, check=False,
                         timeout=timeout_ms / 1000.0 + 30)
        return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


@pytest.fixture(scope="session")
def shared_dir(lab):
    d = Path(lab.state_dir) / "shared"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def node_addresses(lab):
    return " ".join("%s=%s" % (lab.node_name(i), lab.node_ip(i)) for i in lab.indexes)


def all_members(lab):
    return " ".join("%s=member" % lab.node_name(i) for i in lab.indexes)


class VM:
    """A test VM: its RBD images, domain XML file and an agent bound to its parameters."""

    def __init__(self, lab, shared_dir, node_addresses, name, disks=2, **extra):
        self.lab = lab
        self.name = name
        self.images = ["%s-d%d" % (name, k) for k in range(disks)]
        for img in self.images:
            lab.rbd_create(img, 64)
        self.config = shared_dir / (name + ".xml")
        self.config.write_text(lab.make_domain_xml(name, self.images))
        params = {
            "config": str(self.config), "hypervisor": "qemu:///system",
            "ceph_conf": "/etc/ceph/ceph.conf", "ceph_user": lab.ceph_user,
            "ceph_keyring": "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user,
            "node_addresses": node_addresses, "membership": all_members(lab),
            "migration_transport": "tcp", "force_stop": "true",
            "autoset_utilization_cpu": "false", "autoset_utilization_hv_memory": "false",
            "autoset_utilization_host_memory": "false",
        }
        params.update(extra)
        self.agent = Agent(lab, "RBDVirtualDomain", name, params)

    def spec(self, k=0):
        return "%s/%s" % (self.lab.pool, self.images[k])

    def clients(self, k=0):
        return self.lab.image_clients(self.images[k])

    def writer_ips(self, k=0):
        return sorted({w["addr"].split(":")[0] for w in self.clients(k)["watchers"]})

    def running_on(self):
        out = []
        for i in self.lab.indexes:
            if not self.lab.alive(i):
                continue
            names = self.lab.virsh(i, "list", "--name").split()
            if self.name in names:
                out.append(i)
        return out

    def destroy_everywhere(self):
        for i in self.lab.indexes:
            if self.lab.alive(i):
                self.lab.run(i, ["virsh", "-c", "qemu:///system", "destroy", self.name],
                             check=False, timeout=60)
                self.lab.run(i, ["rm", "-f", "/run/resource-agents/vmceph-RBDVirtualDomain-%s.state"
                                 % self.name], check=False)

    def cleanup(self):
        self.destroy_everywhere()
        for img in self.images:
            # the watch of a killed QEMU lingers ~30 s: retry the removal until it is gone
            deadline = time.monotonic() + 90
            while True:
                p = self.lab.run(1, ["rbd", "rm", "--no-progress", "%s/%s" % (self.lab.pool, img)],
                                 check=False, timeout=60)
                if p.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(2)


@pytest.fixture
def make_vm(lab, shared_dir, node_addresses):
    made = []

    def make(disks=2, **extra):
        vm = VM(lab, shared_dir, node_addresses, "vm" + uuid.uuid4().hex[:6], disks, **extra)
        made.append(vm)
        return vm
    yield make
    for vm in made:
        vm.cleanup()


def libvirtd_stop(lab, i):
    pid = lab._spawned_pid(i, "libvirtd")
    assert pid, "libvirtd of node %d not running" % i
    os.kill(pid, 15)
    end = time.monotonic() + 20
    while lab._spawned_pid(i, "libvirtd") and time.monotonic() < end:
        time.sleep(0.1)


def libvirtd_start(lab, i):
    lab.spawn(i, "libvirtd", "exec libvirtd --listen")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if lab.run(i, ["virsh", "-c", "qemu:///system", "version"], check=False,
                   timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("libvirtd of node %d did not come back" % i)


def qemu_pid(lab, i, name):
    p = lab.run(i, ["cat", "/run/libvirt/qemu/%s.pid" % name], check=False)
    return int(p.stdout.strip()) if p.returncode == 0 else None


def quote(argv):
    return " ".join(shlex.quote(a) for a in argv)
