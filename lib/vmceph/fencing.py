"""Fencing RBD clients off their images: blocklist, wait for the OSD map, break the locks.

The part of recovery that touches Ceph, apart from the decision (safety.py) and from the
agent (facts.recover translates its errors). Kept on its own so that a fence agent (a node
fenced through Ceph: blocklist every client of the node) reuses the same sequence.

The order is the safety argument:
1. Blocklist every client instance (``ip:port/nonce``, nonce > 0: ``ip:0/0`` would fence
   every client of that host), once per address however many images it holds, all
   addresses at once: every blocklist change is a monitor (Paxos) round of ~1 s, and the
   monitors fold changes that arrive together into one round (lab: 2 entries one after the
   other 2.0 s, 3 at once 1.0 s). A client that is only cut off, not dead, must never write
   again once its lock is gone (its later I/O fails with ConnectionShutdown).
2. Wait until this client has the newest OSD map, the one carrying the entries, as
   librbd's own lock break does (blocklist -> wait_for_latest_osdmap -> break): vmceph
   blocklists on its own and switches librbd's blocklisting off, so it must wait itself.
   An OSD still on the previous map accepts the old client's writes; with our session on
   the newest map, the lock break and the new QEMU's first operations carry that epoch, and
   an OSD handles an operation only once it has the map of the operation's epoch. The wait
   is bounded and logged with its duration.
3. Break each exclusive lock once per (image, address, cookie): one address may hold other
   cookies (a client that re-registered its watch), each a lock of its own.
"""

import concurrent.futures
import time

from vmceph.ceph import CephUnavailable
from vmceph.safety import Locker, instance_addr

# Below this much time left in the action, a failed blocklist change or lock break is not
# retried.
RETRY_MIN_S = 3.0


class Fencer:
    """Fences clients off through one open ceph.CephSession, within ``deadline``."""

    def __init__(self, session, deadline, log, expire_s):
        self.session = session
        self.deadline = deadline
        self.log = log
        self.expire = expire_s

    def recover(self, recoveries):
        """Blocklist every client of ``recoveries`` (safety.Recovery), wait for the OSD map,
        break the locks they hold. Raises ValueError for an address that is not one client
        instance (nothing is done then), CephPermission / CephUnavailable from Ceph."""
        bad = sorted({r.addr for r in recoveries if not instance_addr(r.addr)})
        if bad:  # the classifier refuses these; never emit ip:0/0 whatever the caller says
            raise ValueError("refusing to blocklist %s: not the address of one client "
                             "instance (ip:port/nonce, nonce > 0)" % ", ".join(bad))
        first = {}
        for r in recoveries:
            first.setdefault(r.addr, r)
        if not first:
            return
        # A client the OSD map already refuses (a host-wide entry of its address, its node
        # fenced through Ceph: safety.apply_ceph_fences) needs no entry of ours: that saves
        # a monitor round (~1 s) of the failover. The wait for the map below stays: the
        # lock break and the new QEMU's operations must carry the epoch of that entry.
        new = [r for r in first.values() if not r.blocklisted]
        for r in first.values():
            if r.blocklisted:
                self.log.warning("not blocklisting %s again: %s", r.addr, r.describe())
        if new:
            self.blocklist_all(new)
        self.wait_for_osdmap()
        done = set()
        for r in recoveries:
            key = (r.image, r.addr, r.cookie)
            if not r.cookie or key in done:
                continue
            done.add(key)
            t0 = time.monotonic()
            broken = self.break_lock(r)
            self.log.warning("%s exclusive lock of %s held by %s at %s (node %s) in %.2f s",
                             "broke the" if broken else "no longer found the", r.image,
                             r.entity, r.addr, r.node or "unknown", time.monotonic() - t0)

    def blocklist_all(self, recoveries):
        """blocklist() of every recovery's address, concurrently; the first error raises
        once all have finished."""
        def one(r):
            t0 = time.monotonic()
            self.blocklist(r.addr)
            self.log.warning("blocklisted %s for %d s in %.2f s: %s", r.addr, self.expire,
                             time.monotonic() - t0, r.describe())
        if len(recoveries) == 1:
            one(recoveries[0])
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(recoveries))) as pool:
            futures = [pool.submit(one, r) for r in recoveries]
        for f in futures:
            f.result()

    def blocklist(self, addr):
        """Add one blocklist entry, retrying until the deadline while the monitors cannot
        commit it.

        Right after a node dies with its monitor, the survivors keep answering reads from
        their lease (quorum_status still lists the dead monitor), so the start decision is
        made, but a blocklist change is a Paxos write: it waits for the new quorum (~15 s
        with the default mon lease of 5 s) and one attempt times out after
        rados_mon_op_timeout (10 s). Seen in the three-node lab: a start after a node crash
        failed that way, and Pacemaker then banned the VM from this node
        (start-failure-is-fatal) for a condition that healed seconds later. The entry is
        idempotent, so a retry is safe.
        """
        attempt = 1
        while True:
            try:
                self.session.blocklist_add(addr, self.expire)
                return
            except CephUnavailable as e:
                if self.deadline.remaining() < RETRY_MIN_S:
                    raise
                self.log.warning("blocklisting %s not confirmed yet (attempt %d: %s); retrying "
                                 "while the monitors form a quorum", addr, attempt, e)
                attempt += 1
                time.sleep(0.5)

    def wait_for_osdmap(self):
        """Wait (bounded: ceph.CephSession.wait_for_latest_osdmap) until this session has
        the newest OSD map, the one carrying the entries just added; log how long."""
        t0 = time.monotonic()
        self.session.wait_for_latest_osdmap()
        self.log.warning("waited %.2f s for the OSD map carrying the blocklist entries before "
                         "breaking any lock", time.monotonic() - t0)

    def break_lock(self, r):
        """Break one exclusive lock, retrying until the deadline while its image cannot be
        opened.

        Breaking needs a read-write open of the image, which reads its header object. When
        the OSD serving that object was cut off (a partitioned node) rather than killed, the
        OSD stays "up" in the osdmap until its peers' heartbeat grace (20 s) runs out and
        every open waits for it; one attempt times out after rados_osd_op_timeout (15 s).
        Seen in the three-node lab: the start failed, and the half-done read-write open left
        a watch of this node on the image for 30 s, which made the next node refuse the
        start as a second writer. The holder is blocklisted already, so a retry is safe.
        """
        attempt = 1
        while True:
            try:
                return self.session.break_lock(r.image, Locker(r.entity, r.cookie, r.addr))
            except CephUnavailable as e:
                if self.deadline.remaining() < RETRY_MIN_S:
                    raise
                self.log.warning("breaking the lock of %s not possible yet (attempt %d: %s); "
                                 "retrying", r.image, attempt, e)
                attempt += 1
                time.sleep(0.5)
