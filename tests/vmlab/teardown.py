"""Complete removal of a lab, from its state directory alone (after a crashed run too).

What belongs to the lab is decided by identity, never by program name:
  - processes in the network namespaces named in lab.json (or recorded by an init of ours),
  - processes whose mount table has mounts from the lab's state directory (they live in one
    of the nodes' mount namespaces, whatever their netns),
so other labs and other Ceph clusters on the machine are never touched.
"""

import os
import shutil
import signal
import time
from pathlib import Path

from . import netns
from .layout import read_int
from .util import LabError, run_cmd

KEPT_ON_FAILURE = ("lab.json", "lab.log", "fence_vmlab.log")
NODE_LOG_DIRS = ("log", "log-ceph", "log-libvirt", "log-pacemaker")


def teardown(lab, keep_logs=False, log=lambda _msg: None):
    """Kill, unplug, unmount, verify, remove. Raises LabError if anything survives."""
    topology = lab.saved_topology()
    killed = 0
    for node in topology["nodes"]:
        for inode in node_inodes(lab, node):
            killed += netns.kill_netns(inode)
    killed += kill_mount_namespace_members(lab)
    switch_inode = netns.netns_inode(topology["switch"])
    if switch_inode:
        killed += netns.kill_netns(switch_inode)
    log(f"down: {killed} processes killed")
    for node in topology["nodes"]:
        netns.delete_netns(node["netns"])  # its veth goes with it
    netns.delete_netns(topology["switch"])  # and the bridge with this one
    for mount_point in sorted(host_mounts(lab), reverse=True):
        run_cmd(["umount", "-l", mount_point], timeout=20, check=False)
    left = leftovers(lab)
    if any(left.values()):
        raise LabError(f"lab {lab.name}: teardown left {left}")
    remove_state(lab, keep_logs)


def node_inodes(lab, node):
    """Network namespaces that are certainly this node's: the named one, and the one its
    init lives in if that init is ours (its command line names our state dir)."""
    inodes = set()
    named = netns.netns_inode(node["netns"])
    if named:
        inodes.add(named)
    holder = read_int(os.path.join(lab.state_dir, node["name"], "holder.pid"))
    if holder and netns.pid_alive(holder) and lab.state_dir + "/" in netns.pid_cmdline(holder):
        inodes.add(netns.pid_netns_inode(holder))
    return inodes


def mount_namespace_members(lab):
    """Live processes (but us) with a mount that comes from the lab's state dir."""
    return [p for p in netns.all_pids()
            if p != os.getpid() and netns.pid_alive(p) and _has_our_mounts(lab, p)]


def _has_our_mounts(lab, pid):
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            # field 4: the mounted directory's path in its filesystem, 5: the mount point
            return any(lab.is_ours(fields[3]) or lab.is_ours(fields[4])
                       for fields in (line.split() for line in f))
    except OSError:
        return False


def kill_mount_namespace_members(lab, timeout=5.0):
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        pids = mount_namespace_members(lab)
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise LabError(f"processes in the lab's mount namespaces survive: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def host_mounts(lab):
    """Mounts in the host's (our) mount namespace that involve the state dir: none expected,
    the nodes mount privately."""
    with open("/proc/self/mountinfo") as f:
        return [fields[4] for fields in (line.split() for line in f)
                if lab.is_ours(fields[3]) or lab.is_ours(fields[4])]


def leftovers(lab):
    """What of this lab still exists on the machine (all empty after a complete down)."""
    topology = lab.saved_topology()
    named = [n["netns"] for n in topology["nodes"]] + [topology["switch"]]
    present = os.listdir(netns.NETNS_DIR) if os.path.isdir(netns.NETNS_DIR) else []
    prefix = lab.saved_params().get("netns_prefix", lab.netns_prefix)
    prefixed = [n for n in present if n.startswith(prefix + "-")]
    processes = []
    for node in topology["nodes"]:
        for inode in node_inodes(lab, node):
            processes += netns.pids_in_netns(inode)
    processes += mount_namespace_members(lab)
    return {"netns": sorted(set(prefixed) | {n for n in named if netns.netns_exists(n)}),
            "processes": sorted(set(processes)), "mounts": host_mounts(lab)}


def remove_state(lab, keep_logs):
    if not os.path.isdir(lab.state_dir):
        return
    if not keep_logs:
        shutil.rmtree(lab.state_dir, ignore_errors=True)
        return
    # keep what explains a failure: lab.json, lab.log and every node's log directories;
    # drop the rest (OSD files, sockets, copies of the configuration)
    for entry in Path(lab.state_dir).iterdir():
        if entry.name in KEPT_ON_FAILURE:
            continue
        if entry.is_dir() and (entry / "log").is_dir():
            for sub in entry.iterdir():
                if sub.name not in NODE_LOG_DIRS:
                    _remove(sub)
            continue
        _remove(entry)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
