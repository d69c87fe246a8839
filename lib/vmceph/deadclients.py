"""Which Ceph client instances of this node are known dead: our domain's previous QEMU.

A QEMU killed while it held an image (OOM killer, a crash, `kill -9`) leaves two things in
Ceph: its watch, which the OSD keeps until the watch times out (osd_client_watch_timeout,
30 s), and librbd's exclusive lock, which nothing ever releases. Seen in the chaos soak
(docs/reliability.md, fault "qemu-kill"): the restart in place was refused as "open
read-write on this node by a client that is not this domain", then, once the watch had
lapsed, as "a lock holder with no watch on this node", until an operator blocklisted the
client and removed the lock. The start rules (issue 10) rightly refuse a holder on this
node without proof that it is dead.

This module keeps that proof. After a start, the agent records which client instance
(``ip:port/nonce``) of each guarded image is its QEMU, with the QEMU's pid and the process
start time the kernel gives it (/proc/PID/stat field 22). At the next start on this node,
if that process no longer exists, no process holds those client instances (a librados
client instance lives in one process; its nonce is random, not reused), so they are dead
for certain: the start may blocklist exactly those instances and break their lock
(safety: ``Facts.dead_local``). If the process still runs, nothing is claimed.

The record lives in the state directory ($HA_RSCTMP, a tmpfs): a reboot removes it, and
with it any claim about clients of an earlier boot.
"""

import os

SUFFIX = ".clients"


def _start_time(pid):
    """The process's start time in clock ticks since boot, or None if it does not exist.
    /proc/PID/stat: the command may hold spaces and ')': fields are counted after the
    last ')'."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read()
    except (OSError, ValueError):
        return None
    try:
        rest = raw[raw.rindex(b")") + 2:].split()
        return int(rest[19])            # field 22 overall; 3 is rest[0]
    except (ValueError, IndexError):
        return None


def encode(pid, start_time, clients):
    """``clients``: (image spec, client address) pairs."""
    lines = ["pid=%d" % pid, "start=%d" % start_time]
    lines += ["client=%s %s" % (spec, addr) for spec, addr in clients]
    return "\n".join(lines) + "\n"


def decode(text):
    """(pid, start, ((spec, addr), ...)) or None when the text is not a record."""
    pid = start = None
    clients = []
    for line in (text or "").split("\n"):
        key, _, value = line.partition("=")
        try:
            if key == "pid":
                pid = int(value)
            elif key == "start":
                start = int(value)
            elif key == "client":
                spec, addr = value.split(" ", 1)
                clients.append((spec, addr))
        except ValueError:
            return None
    if pid is None or start is None or pid <= 0:
        return None
    return pid, start, tuple(clients)


def dead(record, start_time_of=_start_time):
    """The client addresses of ``record`` whose process is gone, and a note saying so; an
    empty set while that process (same pid, same start time) still runs."""
    if record is None:
        return frozenset(), ""
    pid, start, clients = record
    now = start_time_of(pid)
    if now is not None and now == start:
        return frozenset(), ""
    return (frozenset(addr for _, addr in clients),
            "this domain's previous QEMU (pid %d) on this node no longer runs" % pid)


def state_name(instance):
    from vmceph import ocf
    return ocf.state_file_name("vmceph-RBDVirtualDomain-", instance, SUFFIX)


def remember(ctx, pid, clients):
    """Record our QEMU's client instances after a start; a failure is only logged (the
    record only ever widens what a later start may recover)."""
    from vmceph import ocf
    start = _start_time(pid)
    if start is None:
        return False
    return ocf.write_state(ctx, state_name(ctx.instance), encode(pid, start, clients)) \
        is not None


def recall_dead(ctx):
    from vmceph import ocf
    return dead(decode(ocf.read_state(ctx, state_name(ctx.instance))))
