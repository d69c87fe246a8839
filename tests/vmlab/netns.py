"""Network namespaces: the lab's "wires" and its notion of which processes belong to a node.

A node is a network namespace. Every process of the node (its init, daemons, QEMUs, and
commands run with Lab.run) lives in it, so "the processes of node i" is exactly "the
processes whose /proc/PID/ns/net is node i's namespace". Power-off and teardown use that
and nothing else: no process is ever chosen by its name, so other labs or Ceph clusters
on the same machine are never touched.
"""

import os
import signal
import time

from .util import run_cmd

NETNS_DIR = "/run/netns"
BRIDGE = "br0"


def netns_path(name):
    return os.path.join(NETNS_DIR, name)


def netns_exists(name):
    return os.path.exists(netns_path(name))


def netns_inode(name):
    """Inode of a named netns (what /proc/PID/ns/net of its members points to), or None."""
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return None


def pid_netns_inode(pid):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pid_state(pid):
    """One-letter process state from /proc/PID/stat ('Z' = zombie), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name (2nd field) may contain spaces: the state follows the last ')'
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid):
    """True for a running process; a zombie counts as dead (this machine's PID 1 reaps late)."""
    return pid_state(pid) not in (None, "Z")


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_in_netns(inode):
    """Live (non-zombie) PIDs whose network namespace has this inode."""
    if inode is None:
        return []
    return [p for p in all_pids() if pid_netns_inode(p) == inode and pid_alive(p)]


def kill_netns(inode, timeout=10.0):
    """SIGKILL every process in the namespace until none is left; return how many were killed.

    Repeats the scan because a process may fork while we kill (a daemon mid-spawn):
    a real power cut leaves nothing running, and neither may we.
    """
    killed = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_in_netns(inode)
        if not pids:
            return len(killed)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes survive SIGKILL in netns inode {inode}: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def ip(*args, timeout=10, check=True):
    return run_cmd(["ip", *args], timeout=timeout, check=check)


# libvirt's live-migration ports (its migration_port_min..max, and VirtualDomain's random
# migrateport) lie inside Linux's ephemeral range (32768-60999): an outgoing connection of
# a node (a Ceph client's, an OSD heartbeat) may hold one as its local port, and QEMU's
# incoming side then cannot bind it. Seen in a clean-clone CI run (2026-12-02, test_parity):
# "unable to execute QEMU command 'migrate-incoming': Failed to find an available port:
# Address already in use" for tcp://n2:49152. Reserved per namespace, as libvirt's
# documentation advises for hosts (the sysctl is per network namespace).
MIGRATION_PORTS = "49152-49215"


def add_netns(name):
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    run_cmd(["ip", "netns", "exec", name, "sh", "-c",
             "echo %s > /proc/sys/net/ipv4/ip_local_reserved_ports" % MIGRATION_PORTS],
            timeout=10)


def delete_netns(name):
    """Remove the named netns (and with it its veth ends and bridge); no error if missing."""
    if netns_exists(name):
        ip("netns", "delete", name, check=False)
    if os.path.lexists(netns_path(name)):  # a stale file left by a failed delete
        try:
            os.unlink(netns_path(name))
        except OSError:
            pass


def create_switch(switch_ns):
    """The switch: a netns that holds only a bridge, no address (the host stays unaddressed)."""
    add_netns(switch_ns)
    ip("-n", switch_ns, "link", "add", BRIDGE, "type", "bridge")
    ip("-n", switch_ns, "link", "set", BRIDGE, "up")


def plug_node(switch_ns, port, node_ns, address_cidr):
    """Connect node_ns to the switch: eth0 in the node (with its address) <-> port on the bridge."""
    ip("-n", switch_ns, "link", "del", port, check=False)
    ip("-n", switch_ns, "link", "add", port, "type", "veth",
       "peer", "name", "eth0", "netns", node_ns)
    ip("-n", switch_ns, "link", "set", port, "master", BRIDGE, "up")
    ip("-n", node_ns, "addr", "add", address_cidr, "dev", "eth0")
    ip("-n", node_ns, "link", "set", "eth0", "up")


def set_port(switch_ns, port, up):
    """Link state of a node's switch port: down = the node's cable is pulled."""
    ip("-n", switch_ns, "link", "set", port, "up" if up else "down")
