"""Which Ceph client instances of this node are known dead: our domain's previous QEMU.

A QEMU killed while it held an image (OOM killer, a crash, `kill -9`) leaves two things in
Ceph: its watch, which the OSD keeps until the watch times out (osd_client_watch_timeout,
30 s), and librbd's exclusive lock, which nothing ever releases. Seen in the chaos soak
(docs/reliability.md, fault "qemu-kill"): the restart in place was refused as "open
read-write on this node by a client that is not this domain", then, once the watch had
lapsed, as "a lock holder with no watch on this node", until an operator blocklisted the
client and removed the lock. The start rules (issue 10) rightly refuse a holder on this
node without proof that it is dead.

This module keeps that proof. At a start, once the paused QEMU is known to be the only
writer and before it is resumed, the agent records which client instance
(``ip:port/nonce``) of each guarded image is its QEMU, with the QEMU's pid and the process
start time the kernel gives it (/proc/PID/stat field 22). At the next start on this node,
if that process no longer exists, no process holds those client instances (a librados
client instance lives in one process; its nonce is random, not reused), so they are dead
for certain: the start may blocklist exactly those instances and break their lock
(safety: ``Facts.dead_local``). If the process still runs, nothing is claimed.

The same proof serves the stop (``release``): a stop that finds the domain already gone
from this node (its QEMU killed or crashed), or that had to destroy it, blocklists those of
the instances that still watch or lock an image and breaks their locks, so that Pacemaker
may start the VM on any node: another node cannot tell the dead QEMU's client from a live
writer and rightly refuses it. A migration away drops the record (the QEMU handed its
images over); a graceful shutdown needs nothing (the QEMU closed its images).

The record lives in the state directory ($HA_RSCTMP, a tmpfs), and a copy with the
kernel's boot id and the node's name in RECORD_DIR, which survives a reboot. After a
reboot every process of the earlier boot is gone, so the client instances a record of an
earlier boot names are dead for certain, whatever their pid. Seen in the chaos soak (seed
1208, fault 58; seed 1205, fault 14): a node power-fenced in the middle of a migration
came back, and the lock its dead QEMU held was refused as a live member's, on that node
("a lock holder with no watch on this node") and on the others, until an operator removed
it. With the copy, a start on that node recovers them (``Facts.dead_local``), and the
node's first probe after the boot attests them (below) so that a start elsewhere may too.

When that stop cannot reach Ceph (a storage-only partition: corosync up, monitors and OSDs
out of reach), only this node knows, and no other node can act on what it knows. So the
stop first says it through Pacemaker: the transient node attribute
``vmceph-dead-<resource>`` lists the dead instances (``attest``). A start on another node
reads every node's attributes (crm_mon -A, which it reads anyway) and may then blocklist
exactly those instances of the node that attested them and break their locks
(``safety.Facts.dead_attested``). Seen in the lab (storage-only cut, 2026-12-01): without
it the VM ran nowhere for more than 45 s, its lock held by a destroyed QEMU of a live
member. A release that succeeds withdraws the attribute.

A QEMU that arrived by live migration was not started here: migrate_from records its
client instances too (``record_arrival``), so the same proof exists for it.
"""

import os
from collections import namedtuple

SUFFIX = ".clients"


def process_start_time(pid):
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


# Where the reboot-proof copy of the record lives (one directory per node, not shared).
RECORD_DIR = "/var/lib/vmceph"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id(path=None):
    """The kernel's boot id (a random UUID, new at every boot), or None if unreadable."""
    try:
        with open(path or BOOT_ID_PATH, "rb") as f:
            text = f.read(100).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and all(c in "0123456789abcdef-" for c in text) else None


# (pid, start, ((spec, addr), ...), boot, node): boot and node are None in a record
# written before they were recorded.
Record = namedtuple("Record", "pid start clients boot node", defaults=(None, None))


def encode(pid, start_time, clients, boot=None, node=None):
    """``clients``: (image spec, client address) pairs."""
    lines = ["pid=%d" % pid, "start=%d" % start_time]
    lines += ["boot=%s" % boot] if boot else []
    lines += ["node=%s" % node] if node else []
    lines += ["client=%s %s" % (spec, addr) for spec, addr in clients]
    return "\n".join(lines) + "\n"


def decode(text):
    """A Record, or None when the text is not a record."""
    pid = start = boot = node = None
    clients = []
    for line in (text or "").split("\n"):
        key, _, value = line.partition("=")
        try:
            if key == "pid":
                pid = int(value)
            elif key == "start":
                start = int(value)
            elif key == "boot":
                boot = value or None
            elif key == "node":
                node = value or None
            elif key == "client":
                spec, addr = value.split(" ", 1)
                clients.append((spec, addr))
        except ValueError:
            return None
    if pid is None or start is None or pid <= 0:
        return None
    return Record(pid, start, tuple(clients), boot, node)


def dead(record, start_time_of=process_start_time, boot_now=None):
    """The client addresses of ``record`` whose process is gone, and a note saying so; an
    empty set while that process (same pid, same start time, same boot) still runs.
    ``boot_now``: this boot's id; a record of another boot names processes that are gone,
    whatever runs under their pids now."""
    if record is None:
        return frozenset(), ""
    addrs = frozenset(addr for _, addr in record.clients)
    if record.boot and boot_now and record.boot != boot_now:
        return (addrs, "this domain's QEMU (pid %d) on this node ran before the node "
                "rebooted (boot %s, now %s)" % (record.pid, record.boot[:8], boot_now[:8]))
    now = start_time_of(record.pid)
    if now is not None and now == record.start:
        return frozenset(), ""
    return addrs, "this domain's previous QEMU (pid %d) on this node no longer runs" % record.pid


def state_name(instance):
    from vmceph import ocf
    return ocf.state_file_name("vmceph-RBDVirtualDomain-", instance, SUFFIX)


def remember(ctx, pid, clients):
    """Record our QEMU's client instances after a start; a failure is only logged (the
    record only ever widens what a later start may recover). The copy in RECORD_DIR is
    written only with the boot id and the node's name: without them it proves nothing."""
    from vmceph import ocf
    start = process_start_time(pid)
    if start is None:
        return False
    boot, node = boot_id(), ctx.node_name or None
    text = encode(pid, start, clients, boot, node)
    if boot and node:
        ocf.write_state(ctx, state_name(ctx.instance), text, dirs=[RECORD_DIR])
    return ocf.write_state(ctx, state_name(ctx.instance), text) is not None


def remember_qemu(ctx, name, clients):
    """Record the client instances in ``clients`` ((image spec, address) pairs) as those of
    domain ``name``'s QEMU on this node: only addresses of one instance count, with the
    QEMU's pid. False (nothing recorded) when there is none or no QEMU is found."""
    from vmceph import virt
    from vmceph.safety import instance_addr
    clients = [(spec, addr) for spec, addr in clients if instance_addr(addr)]
    pid = virt.qemu_pid_of(name)
    return bool(clients) and pid is not None and remember(ctx, pid, clients)


def load(ctx):
    """This node's record for this resource: the state directory's, else the copy that
    survives a reboot, if it is this node's (a record carries the node's name; a
    directory shared between nodes would otherwise lend one node's record to another)."""
    from vmceph import ocf
    rec = decode(ocf.read_state(ctx, state_name(ctx.instance)))
    if rec is None:
        rec = decode(ocf.read_state(ctx, state_name(ctx.instance), dirs=[RECORD_DIR]))
        if rec is not None and (not rec.node or rec.node != ctx.node_name or not rec.boot):
            return None
    return rec


def recall_dead(ctx):
    return dead(load(ctx), boot_now=boot_id())


def forget_record(ctx):
    """Drop the record: its QEMU handed its images over cleanly (a live migration away)."""
    from vmceph import ocf
    ocf.remove_state(ctx, state_name(ctx.instance))
    ocf.remove_state(ctx, state_name(ctx.instance), dirs=[RECORD_DIR])


def attest_earlier_boot(ctx, deadline):
    """A probe that finds the domain not running here: if the only record is the copy of
    an earlier boot, its client instances are dead for certain; say so through Pacemaker
    (as a stop that cannot reach Ceph does) so that a start on another node may recover
    them. Best-effort and bounded (ATTEST_CAP_S); True when attested."""
    from vmceph import ocf
    if ocf.read_state(ctx, state_name(ctx.instance)) is not None:
        return False               # this boot's record: the stop deals with it
    rec, now = load(ctx), boot_id()    # the copy, if it is this node's
    if rec is None or not now or rec.boot == now:
        return False
    addrs, note = dead(rec, boot_now=now)
    if not addrs:
        return False
    from vmceph.ocf import Share
    if attest(ctx, addrs, Share(deadline, cap=ATTEST_CAP_S)):
        ctx.log.info("attested dead through Pacemaker: %s (%s)", " ".join(sorted(addrs)), note)
        return True
    return False


ATTEST_PREFIX = "vmceph-dead-"
ATTEST_CAP_S = 3.0


def attest_name(instance):
    """The node attribute a stop of ``instance`` attests its dead clients in."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance or "")
    return ATTEST_PREFIX + safe


def attested(nodes):
    """frozenset of (node, client address) from every node's ``vmceph-dead-*`` attributes
    (``nodes``: {name: NodeInfo} as cluster.parse_crm_mon gives it). Pure."""
    out = set()
    for name, info in (nodes or {}).items():
        for key, value in (getattr(info, "attributes", None) or {}).items():
            if key.startswith(ATTEST_PREFIX):
                out.update((name, a) for a in (value or "").split() if "/" in a)
    return frozenset(out)


def attest(ctx, addrs, deadline):
    """Publish ``addrs`` (dead for certain) as this node's attribute for this resource;
    True if attrd took it. Outside a cluster (no attrd) it only logs."""
    from vmceph.bounded import Timeout
    from vmceph.cluster import Cluster, ClusterError
    try:
        Cluster(deadline, ctx.log).set_attribute(attest_name(ctx.instance),
                                                 " ".join(sorted(addrs)))
    except (ClusterError, OSError, Timeout) as e:
        ctx.log.warning("cannot tell the cluster that the dead QEMU's clients are dead "
                        "(%s): another node cannot recover them", e)
        return False
    return True


def withdraw(ctx, deadline):
    from vmceph.bounded import Timeout
    from vmceph.cluster import Cluster, ClusterError
    try:
        Cluster(deadline, ctx.log).delete_attribute(attest_name(ctx.instance))
    except (ClusterError, OSError, Timeout) as e:
        ctx.log.debug("cannot delete %s: %s", attest_name(ctx.instance), e)


def record_arrival(ctx, params, dom, share):
    """migrate_from: record which client instances of ``dom``'s guarded images belong to
    the QEMU that just arrived here (the watchers at this node's address); best-effort, as
    remember. Runs beside the rest of migrate_from. True when recorded, None when the
    domain has no guarded image, False otherwise."""
    specs = [d.spec for d in dom.guarded_disks]
    if not specs:
        return None            # nothing to record; no Ceph on migrate_from's path then
    from vmceph.ceph import CephError, CephSession
    from vmceph.safety import ip_of
    try:
        with CephSession(params.ceph_conf, params.ceph_user, params.ceph_keyring, share,
                         ctx.log) as session:
            ips = set(session.client_addrs())
            imgs = session.inspect_all(specs)
    except (CephError, ValueError) as e:
        ctx.log.debug("client instances of the arrived QEMU not recorded: %s", e)
        return False
    return remember_qemu(ctx, dom.name, [(i.spec, w.addr) for i in imgs for w in i.watchers
                                         if ip_of(w.addr) in ips])


def leftovers(addrs, images, node, note):
    """safety.Recovery for each client instance in ``addrs`` (dead for certain) that still
    watches or holds the exclusive lock of one of ``images`` (safety.ImageFacts). Pure.

    A lock that is not librbd's (another tag, a cookie that is not "auto N") is never
    touched: it is not what the dead QEMU left."""
    from vmceph.safety import Recovery
    out = []
    for img in images:
        if not img.exists or img.error or img.permission_denied:
            continue
        locks = {}
        if img.lock_tag in (None, "internal"):
            locks = {lk.addr: lk for lk in img.lockers
                     if lk.addr in addrs and lk.watch_cookie is not None}
        for w in img.watchers:
            if w.addr in addrs and not any(r.image == img.spec and r.addr == w.addr
                                           for r in out):
                lk = locks.pop(w.addr, None)
                out.append(Recovery(img.spec, w.addr, w.entity, node, note,
                                    lk.cookie if lk else None))
        for lk in locks.values():
            out.append(Recovery(img.spec, lk.addr, lk.entity, node, note, lk.cookie))
    return out


# A stop releases a dead QEMU's clients within at most this share of what is left of it,
# and at most RELEASE_CAP_S: a side task (stop never needs Ceph), and the start of the VM
# elsewhere waits for this stop.
RELEASE_SHARE = 0.25
RELEASE_CAP_S = 12.0


def release(ctx, params, share):
    """The stop's side task when it found the domain already gone from this node, or
    destroyed it: if the
    domain's last QEMU is dead (its recorded process no longer exists), blocklist the client
    instances it left on its images and break the locks they hold, so that the VM can start
    at once on any node, not only here.

    Seen in the chaos soak (make test, seed 11, fault "qemu-kill"): after the QEMU of vm2
    was killed on node1, Pacemaker stopped it there and started it on node2 and node3; both
    starts were refused ("image rbd/vm2-disk0 is open read-write by client.45696 at
    10.191.0.1:0/3874490420 on node1, a live cluster member"), which is right from their
    side (they cannot tell that the client is dead), and the VM stayed down until an
    operator cleaned up. Only this node can prove the process is gone.

    ``params``: get(name) of ceph_conf, ceph_user, ceph_keyring, blocklist_expire.
    ``share``: a deadline (remaining, at_most). Never raises: a failure is logged, and the
    record is kept for a restart here (Facts.dead_local)."""
    from vmceph import ocf
    record = load(ctx)
    addrs, note = dead(record, boot_now=boot_id())
    if not addrs:
        return None
    specs = sorted({spec for spec, addr in record.clients if addr in addrs})
    from vmceph.ocf import Share
    # said first, through Pacemaker: if Ceph cannot be reached (storage-only partition),
    # this is how a start on another node learns that these instances are dead
    attested_now = attest(ctx, addrs, Share(share, cap=ATTEST_CAP_S))
    from vmceph.ceph import CephError, CephSession
    from vmceph.fencing import Fencer
    log = ctx.log
    try:
        with CephSession(params.get("ceph_conf"), params.get("ceph_user"),
                         params.get("ceph_keyring"), share, log) as session:
            imgs = session.inspect_all(specs)
            failed = [i for i in imgs if i.exists and (i.error or i.permission_denied)]
            recs = leftovers(addrs, imgs, ctx.node_name or None,
                             note + ", so nothing of it can write again")
            if recs:
                Fencer(session, share, log, params.get("blocklist_expire")).recover(recs)
    except (CephError, ValueError) as e:
        log.warning("cannot release the clients the dead QEMU left on %s (%s): a start on "
                    "another node refuses until their watch times out and someone removes "
                    "the lock; a start on this node recovers them itself", ", ".join(specs), e)
        return False
    if failed:
        log.warning("cannot tell whether the dead QEMU left clients on %s: %s",
                    ", ".join(i.spec for i in failed),
                    "; ".join(i.error or "permission denied" for i in failed))
        return False
    forget_record(ctx)
    if attested_now:
        withdraw(ctx, Share(share, cap=ATTEST_CAP_S))
    if recs:
        log.warning("released %d client instance(s) of the dead QEMU from %s",
                    len({r.addr for r in recs}), ", ".join(sorted({r.image for r in recs})))
    return True

