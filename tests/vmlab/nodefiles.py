"""The files of a lab on the host: cluster-wide configuration and keys, and each node's own
directories that its init bind-mounts over /etc/ceph, /var/lib/libvirt, /run, ...

Functions take the Layout of the lab (names and paths) and write under its state dir only.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

from . import configs
from .layout import HERE
from .util import base_env, run_cmd, write_file

FENCE_AGENT = HERE / "fence_vmlab"
FENCE_ID = "fence-vmlab"

# Host directories a node gets its own copy of: (node subdirectory, mount point).
CEPH_DIRS = [("etc-ceph", "/etc/ceph"), ("lib-ceph", "/var/lib/ceph"),
             ("log-ceph", "/var/log/ceph")]
LIBVIRT_DIRS = [("etc-libvirt", "/etc/libvirt"), ("lib-libvirt", "/var/lib/libvirt"),
                ("log-libvirt", "/var/log/libvirt"), ("cache-libvirt", "/var/cache/libvirt")]
PACEMAKER_DIRS = [("etc-corosync", "/etc/corosync"), ("lib-corosync", "/var/lib/corosync"),
                  ("lib-pacemaker", "/var/lib/pacemaker"),
                  ("log-pacemaker", "/var/log/pacemaker")]
# The agent's record of its QEMUs' Ceph clients that survives a reboot (deadclients).
VMCEPH_DIRS = [("lib-vmceph", "/var/lib/vmceph")]
# A node's own kernel boot id, new at every boot of the node: the nodes share the host's
# kernel, whose boot id never changes in the lab; deadclients tells a record of an earlier
# boot by it.
BOOT_ID = ("boot_id", "/proc/sys/kernel/random/boot_id")
# Persist across a node's reboots, like a disk: Ceph data, libvirt definitions, the CIB.
# /run and the pid files are new at every boot.
VOLATILE = ("run", "pids")


# /etc/pacemaker holds the pacemaker_remote authkey the cluster nodes and the remote
# nodes share (only mounted when the lab has remote nodes)
REMOTE_DIRS = [("etc-pacemaker", "/etc/pacemaker")]


def private_dirs(lab):
    return CEPH_DIRS + LIBVIRT_DIRS + VMCEPH_DIRS + (PACEMAKER_DIRS if lab.pacemaker else []) + (
        REMOTE_DIRS if getattr(lab, "remotes", 0) else [])


# ---------------------------------------------------------------------- cluster-wide
def write_cluster_files(lab):
    write_file(lab.path("lab.json"), json.dumps(lab.lab_json(), indent=2) + "\n")
    write_ceph_files(lab)
    write_libvirt_seed(lab)
    write_file(lab.path("hosts"), configs.hosts_file(lab.all_node_list()))
    write_file(lab.path("sbin", "fence_vmlab"), FENCE_AGENT.read_text(), mode=0o755)
    # Pacemaker finds agents only under /usr/lib/ocf/resource.d/<provider>: inside the
    # nodes, vmceph is this symlink to the checkout's agents (live, no install step)
    os.makedirs(lab.path("ocf"), exist_ok=True)
    if lab.checkout_agents:
        os.symlink(os.path.join(lab.project_root, "agents"), lab.path("ocf", "vmceph"))
        # the checkout's fence agent too, now: a file added to the overlay's lower
        # directory later is not reliably visible in /usr/sbin (once something has looked
        # /usr/sbin/fence_vmceph up and not found it, stonith_admin --metadata kept
        # failing with "No such device" after the symlink appeared)
        fence = os.path.join(lab.project_root, "agents", "fence", "fence_vmceph")
        if os.path.exists(fence):
            os.symlink(fence, lab.path("sbin", "fence_vmceph"))
    if lab.pacemaker:
        write_pacemaker_files(lab)
    if getattr(lab, "remotes", 0):
        shutil.copy(remoted_binary(lab), lab.path("sbin", "pacemaker-remoted"))


def remoted_binary(lab):
    """/usr/sbin/pacemaker-remoted of Debian's pacemaker-remote package, unpacked (not
    installed) next to the labs' state dirs. Debian 12's pacemaker-remote Conflicts:
    pacemaker: `apt-get install pacemaker-remote` REMOVES pacemaker from the machine (seen
    here), so the lab fetches the .deb with `apt-get download` (or takes it from apt's
    cache) and overlays only the daemon into the remote nodes' /usr/sbin."""
    cache = os.path.join(lab.state_root, ".pacemaker-remote")
    binary = os.path.join(cache, "root", "usr", "sbin", "pacemaker-remoted")
    if os.path.exists(binary):
        return binary
    os.makedirs(cache, exist_ok=True)
    debs = sorted(Path("/var/cache/apt/archives").glob("pacemaker-remote_*.deb"))
    if not debs:
        run_cmd(["apt-get", "download", "pacemaker-remote"], timeout=120, cwd=cache)
        debs = sorted(Path(cache).glob("pacemaker-remote_*.deb"))
    tmp = os.path.join(cache, f"root.{os.getpid()}")
    run_cmd(["dpkg-deb", "-x", str(debs[-1]), tmp], timeout=60)
    try:
        os.rename(tmp, os.path.join(cache, "root"))
    except OSError:  # another lab unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def write_ceph_files(lab):
    size, min_size = lab.pool_size()
    fsid = str(uuid.uuid4())
    conf = configs.ceph_conf(fsid, lab.node_list(), lab.network, size, min_size, lab.pg_num,
                             lab.mgr, lab.osd_gib << 30, lab.ceph_conf_extra)
    write_file(lab.path("ceph", "ceph.conf"), conf)
    admin = configs.keyring("client.admin", configs.ceph_secret(),
                            {"mon": "allow *", "osd": "allow *", "mgr": "allow *",
                             "mds": "allow *"})
    user = configs.keyring(f"client.{lab.ceph_user}", configs.ceph_secret(),
                           {"mon": "profile rbd", "osd": f"profile rbd pool={lab.pool}",
                            "mgr": f"profile rbd pool={lab.pool}"})
    mgr = configs.keyring(f"mgr.{lab.node_name(1)}", configs.ceph_secret(),
                          {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"})
    write_file(lab.path("ceph", "ceph.client.admin.keyring"), admin, 0o600)
    write_file(lab.path("ceph", f"ceph.client.{lab.ceph_user}.keyring"), user, 0o600)
    write_file(lab.path("ceph", "mgr.keyring"), mgr, 0o600)
    # every entity in the mon keyring at mkfs time is imported into the auth database:
    # admin, the restricted client and the mgr exist from the first second, no `auth add`
    mon = configs.keyring("mon.", configs.ceph_secret(), {"mon": "allow *"})
    write_file(lab.path("ceph", "mon.keyring"), mon + admin + user + mgr, 0o600)
    osds = [{"id": i - 1, "uuid": str(uuid.uuid4()), "secret": configs.ceph_secret()}
            for i in lab.indexes]
    write_file(lab.path("ceph", "osds.json"), json.dumps(osds) + "\n", 0o600)
    argv = ["monmaptool", "--create", "--fsid", fsid]
    for name, ip in lab.node_list():
        argv += ["--addv", name,
                 f"[v2:{ip}:{configs.MON_PORT_V2},v1:{ip}:{configs.MON_PORT_V1}]"]
    run_cmd(argv + [lab.path("ceph", "monmap")], timeout=30)


def osd_specs(lab):
    """[{id, uuid, secret}] of the OSDs, node i has osd.(i-1)."""
    with open(lab.path("ceph", "osds.json")) as f:
        return json.load(f)


def user_key(lab):
    """client.vmceph's secret (what the libvirt ceph secret holds)."""
    text = Path(lab.path("ceph", f"ceph.client.{lab.ceph_user}.keyring")).read_text()
    return next(line.split("=", 1)[1].strip() for line in text.splitlines() if "key =" in line)


def write_libvirt_seed(lab):
    """One copy of the host's /etc/libvirt without its default NAT network (no dnsmasq)."""
    seed = lab.path("libvirt-etc")
    shutil.copytree("/etc/libvirt", seed, symlinks=True)
    shutil.rmtree(os.path.join(seed, "qemu", "networks"), ignore_errors=True)
    for path in Path(seed, "qemu").glob("*.xml"):
        path.unlink()


def write_pacemaker_files(lab):
    corosync = configs.corosync_conf(f"vmlab-{lab.name}"[:32], lab.node_list(), lab.token_ms)
    write_file(lab.path("pacemaker", "corosync.conf"), corosync)
    cib = lab.path("pacemaker", "cib.xml")
    write_file(cib, run_cmd(["cibadmin", "--empty"], timeout=30).stdout)
    env = base_env({"CIB_file": cib})
    # dc-deadtime: else the first election waits 20 s for a DC that does not exist
    for prop, value in [("stonith-enabled", "true"), ("dc-deadtime", "2s"),
                        ("stonith-timeout", "30s"), ("cluster-recheck-interval", "1min")]:
        run_cmd(["crm_attribute", "-t", "crm_config", "-n", prop, "-v", value],
                timeout=30, env=env)
    names = [name for name, _ in lab.all_node_list()]
    fence = configs.fence_primitive_xml(FENCE_ID, names, lab.state_dir)
    run_cmd(["cibadmin", "-C", "-o", "resources", "-X", fence], timeout=30, env=env)
    for i in lab.remote_indexes:
        run_cmd(["cibadmin", "-C", "-o", "resources", "-X",
                 remote_primitive_xml(lab.node_name(i), lab.node_ip(i))], timeout=30, env=env)
    if lab.remotes:
        # pacemaker_remote's shared key (the cluster nodes' controllers connect with it)
        write_file(lab.path("pacemaker", "authkey"), os.urandom(3072).hex()[:4096], 0o640)


def remote_primitive_xml(name, ip):
    """The connection resource of a pacemaker_remote node, as an administrator would
    write it (pcs cluster node add-remote makes the same): its id is the node's name;
    reconnect_interval lets the cluster connect again once the fenced node is back."""
    return (f"<primitive id='{name}' class='ocf' provider='pacemaker' type='remote'>"
            f"<instance_attributes id='{name}-ia'>"
            f"<nvpair id='{name}-server' name='server' value='{ip}'/>"
            f"<nvpair id='{name}-reconnect' name='reconnect_interval' value='15s'/>"
            f"</instance_attributes><operations>"
            f"<op id='{name}-monitor' name='monitor' interval='5s' timeout='15s'/>"
            f"</operations></primitive>")


# ---------------------------------------------------------------------- per node
def make_node_dirs(lab, i, first_boot):
    """Node i's directories; at first boot also its configuration."""
    d = lab.node_dir(i)
    for sub in VOLATILE:
        shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
    for sub in ["run", "pids", "log", "etc-ceph", "log-ceph", "log-libvirt/qemu",
                "lib-ceph/mon", "lib-ceph/osd", "lib-ceph/mgr", "lib-ceph/tmp",
                "lib-ceph/crash", "lib-libvirt", "cache-libvirt", "lib-vmceph"]:
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    write_file(os.path.join(d, BOOT_ID[0]), str(uuid.uuid4()) + "\n")
    for name in ("holder.pid", "init.sock"):
        if os.path.lexists(os.path.join(d, name)):
            os.unlink(os.path.join(d, name))
    if first_boot:
        _configure_ceph(lab, i)
        _configure_libvirt(lab, i)
        if lab.pacemaker:
            _configure_pacemaker(lab, i)
        if getattr(lab, "remotes", 0):
            key = lab.node_dir(i, "etc-pacemaker", "authkey")
            os.makedirs(os.path.dirname(key), exist_ok=True)
            shutil.copy(lab.path("pacemaker", "authkey"), key)
            run_cmd(["chown", "root:haclient", key], timeout=30)
            os.chmod(key, 0o640)


def _configure_ceph(lab, i):
    if lab.is_remote(i):
        # a compute-only node is a Ceph client: the configuration and client.vmceph's key
        for name in ("ceph.conf", f"ceph.client.{lab.ceph_user}.keyring"):
            shutil.copy(lab.path("ceph", name), lab.node_dir(i, "etc-ceph", name))
        return
    for name in ("ceph.conf", "ceph.client.admin.keyring",
                 f"ceph.client.{lab.ceph_user}.keyring"):
        shutil.copy(lab.path("ceph", name), lab.node_dir(i, "etc-ceph", name))
    if i == 1 and lab.mgr:
        mgr_dir = lab.node_dir(i, "lib-ceph", "mgr", f"ceph-{lab.node_name(i)}")
        os.makedirs(mgr_dir, exist_ok=True)
        shutil.copy(lab.path("ceph", "mgr.keyring"), os.path.join(mgr_dir, "keyring"))
    osd = osd_specs(lab)[i - 1]
    write_file(lab.node_dir(i, "lib-ceph", "osd", f"ceph-{osd['id']}", "keyring"),
               configs.keyring(f"osd.{osd['id']}", osd["secret"]), 0o600)


def _configure_libvirt(lab, i):
    etc = lab.node_dir(i, "etc-libvirt")
    shutil.copytree(lab.path("libvirt-etc"), etc, symlinks=True)
    host_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"vmlab:{lab.name}:{lab.node_name(i)}")
    write_file(os.path.join(etc, "libvirtd.conf"), configs.libvirtd_conf(lab.node_ip(i), host_uuid))
    write_file(os.path.join(etc, "qemu.conf"), configs.qemu_conf(lab.node_ip(i)))
    seed_qemu_caps(lab, lab.node_dir(i, "cache-libvirt"))


def _configure_pacemaker(lab, i):
    d = lab.node_dir(i)
    for sub in ["etc-corosync", "lib-corosync", "log-pacemaker", "lib-pacemaker/cib",
                "lib-pacemaker/pengine", "lib-pacemaker/blackbox", "lib-pacemaker/cores"]:
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    if not lab.is_remote(i):  # a remote node has no corosync and no CIB of its own
        shutil.copy(lab.path("pacemaker", "corosync.conf"), os.path.join(d, "etc-corosync"))
        cib = os.path.join(d, "lib-pacemaker", "cib", "cib.xml")
        shutil.copy(lab.path("pacemaker", "cib.xml"), cib)
        os.chmod(cib, 0o600)
    # the Pacemaker daemons run as hacluster and own their state, as the package sets it up
    run_cmd(["chown", "-R", "hacluster:haclient", os.path.join(d, "lib-pacemaker"),
             os.path.join(d, "log-pacemaker")], timeout=30)
    for sub in ("cib", "pengine", "blackbox", "cores"):
        os.chmod(os.path.join(d, "lib-pacemaker", sub), 0o750)
    os.chmod(os.path.join(d, "log-pacemaker"), 0o770)


def node_mounts(lab, i):
    """What node i's init mounts, in order (nodeinit.py carries it out)."""
    mounts = [{"type": "bind", "src": lab.node_dir(i, "run"), "dst": "/run"},
              # libqb (corosync, pacemaker) keeps its IPC here
              {"type": "tmpfs", "dst": "/dev/shm", "options": "mode=1777"},
              {"type": "bind", "src": lab.node_dir(i, BOOT_ID[0]), "dst": BOOT_ID[1]}]
    mounts += [{"type": "bind", "src": lab.node_dir(i, sub), "dst": dst}
               for sub, dst in private_dirs(lab)]
    mounts += [{"type": "bind", "src": lab.path("hosts"), "dst": "/etc/hosts"},
               # read-only overlays: the host's directories stay untouched
               {"type": "overlay", "dst": "/usr/sbin",
                "options": f"lowerdir={lab.path('sbin')}:/usr/sbin"},
               {"type": "overlay", "dst": "/usr/lib/ocf/resource.d",
                "options": f"lowerdir={lab.path('ocf')}:/usr/lib/ocf/resource.d"}]
    return mounts


# ---------------------------------------------------------------------- QEMU capabilities
def qemu_caps_cache(lab):
    """A probed QEMU capabilities cache, kept next to the labs' state dirs: libvirtd probes
    QEMU for ~2 s of CPU at its first start, three nodes at once on two cores."""
    return os.path.join(lab.state_root, ".qemu-caps-cache")


def seed_qemu_caps(lab, cache_dir):
    for source in ("/var/cache/libvirt/qemu/capabilities", qemu_caps_cache(lab)):
        if os.path.isdir(source) and any(Path(source).glob("*.xml")):
            target = os.path.join(cache_dir, "qemu", "capabilities")
            shutil.copytree(source, target, dirs_exist_ok=True)
            return


def save_qemu_caps(lab):
    probed = lab.node_dir(1, "cache-libvirt", "qemu", "capabilities")
    target = qemu_caps_cache(lab)
    if os.path.isdir(probed) and not os.path.isdir(target):
        tmp = f"{target}.{os.getpid()}"
        shutil.copytree(probed, tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another lab saved it first
            shutil.rmtree(tmp, ignore_errors=True)
