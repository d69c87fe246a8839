"""Who may write an RBD image, and what start, migrate_to and the deep monitor do about it.

Pure functions over facts the adapters gathered (ceph.py, virt.py, cluster.py); no I/O.
One classifier, ``classify_image``, sorts every client of an image (watchers and lock
holders) into one of three categories; the three decisions only map those categories to a
verdict, so they cannot disagree about a client:

- OURS: a writer on this node (our QEMU when the domain runs here);
- BLOCKS: a client that may be serving a running VM, or that cannot be proven dead: a
  writer or lock holder on a live member, an unclean node, a node in maintenance, this node
  (a holder with no watch), a node that left cleanly but still watches, an address two
  sources give to different nodes, an unknown address under the refuse policy, anything
  when membership cannot be read;
- FENCE: a client that cannot be serving a running VM, on positive evidence only: its node
  was fenced (Pacemaker's fencing history, after the node's last activity), or it left the
  cluster cleanly and the client has no watch, or an unknown address under the blocklist
  policy with membership known. An owner learnt only from name resolution never counts as
  evidence. FENCE needs an address of one client instance (``ip:port/nonce``, nonce > 0):
  ``ip:0/0`` would blocklist every client of that host.

| situation (README start table, issue 10)                            | start              |
|---------------------------------------------------------------------|--------------------|
| no quorum / Ceph unreachable within the deadline                    | UNAVAILABLE        |
| image missing / no permission / could not be inspected              | CONFIG/PERM/UNAVAIL|
| domain running here, its QEMU the only writer                       | ALREADY_RUNNING    |
| writer on a live member / unclean / maintenance node                | REFUSE             |
| writer on this node that is not our running domain                  | REFUSE             |
| writer at an unknown address                                        | REFUSE / FENCE (*) |
| writer or holder on a node confirmed fenced                         | RECOVER_THEN_START |
| writer or holder on a lost node fenced through Ceph (**)            | RECOVER_THEN_START |
| holder with no watch on a node that left cleanly                    | RECOVER_THEN_START |
| holder with no watch on a member, unclean node or this node         | REFUSE (retried)   |
| watcher or holder on this node that was this domain's previous QEMU,|                    |
|   whose process is gone (deadclients: recorded pid and start time)  | RECOVER_THEN_START |
| watcher or holder on a member, unclean or maintenance node whose    |                    |
|   own stop attested that exact instance dead (***)                  | RECOVER_THEN_START |
| holder with no watch at an unknown address                          | as unknown writer  |
| membership cannot be read                                           | never RECOVER      |
| lock not librbd's exclusive lock (tag/cookie)                       | REFUSE, names it   |
| no writers                                                          | START              |
(*) FENCE only with unknown_client_policy=blocklist and membership known.
(**) unclean, left or fenced for Pacemaker, and the client's address has fence_vmceph's
host-wide entry in the OSD blocklist (apply_ceph_fences): GONE, and the recovery adds no
entry of its own, it only breaks the lock. A record of the fence without the entry is not.
(***) ``Facts.dead_attested``: the node that ran the domain's QEMU proved it dead (pid and
start time, or a record of an earlier boot: deadclients) at a stop that could not reach
Ceph to release it itself (a storage-only partition) or at its first probe after a reboot,
and said so through Pacemaker (node attribute ``vmceph-dead-<resource>``). Only that instance (``ip:port/nonce``) is blocklisted, only
when the attesting node is the address's owner; every other client of that node still
blocks. Membership must be readable, as for every recovery.

migrate_to refuses on any BLOCKS client, foreign lock or image not inspected; FENCE clients
cannot write and do not stop it. The deep monitor reports BLOCKS clients and foreign locks as
split brain, and an image or a quorum it could not check as a warning, never as a failure.

"Writer" = a client with the image open read-write = a watcher. The exclusive-lock holder
(``list_lockers()``: tag ``internal``, cookie ``auto <n>``) is alive iff a watcher has the
same address and watch cookie ``<n>`` (docs/ceph-facts.md).
"""

from typing import NamedTuple, Optional, Tuple

# The fact and verdict types are NamedTuples, not dataclasses: immutable and compared by
# value all the same, without the 8.5 ms 'import dataclasses' costs every start here
# (python3 -X importtime; typing is loaded by libvirt anyway).

# Where a Ceph client lives, as far as the cluster knows.
LOCAL = "local"              # this node
MEMBER = "member"            # a live cluster member (online, not unclean)
UNCLEAN = "unclean"          # lost, fencing pending or failed: it may still be writing
MAINTENANCE = "maintenance"  # offline while in maintenance: its VMs may still run
GONE = "gone"                # fenced (fencing history), not active since: cannot be writing
LEFT = "left"                # offline and clean, not (provably) fenced: left cleanly
CONFLICT = "conflict"        # two sources give this address to different nodes
UNKNOWN = "unknown"          # an address no source maps to a cluster node

NODE_STATES = (LOCAL, MEMBER, UNCLEAN, MAINTENANCE, GONE, LEFT, CONFLICT, UNKNOWN)

# Verdicts.
START = "start"
ALREADY_RUNNING = "already-running"
RECOVER_THEN_START = "recover-then-start"
REFUSE = "refuse"
UNAVAILABLE = "unavailable"
CONFIG = "config"
PERM = "perm"

# Policies for a writer at an address no source maps to a node.
UNKNOWN_REFUSE = "refuse"
UNKNOWN_BLOCKLIST = "blocklist"

# Client categories of the classifier.
OURS = "ours"
BLOCKS = "blocks"
FENCE = "fence"

DNS_SOURCE = "name resolution"


class Watcher(NamedTuple):
    addr: str                 # "10.252.0.1:0/3154213287" as watchers_list() gives it
    client_id: int            # the client's global id: entity "client.<id>"
    cookie: int               # watch handle; the lock cookie is "auto <cookie>"

    @property
    def entity(self):
        return "client.%d" % self.client_id


class Locker(NamedTuple):
    entity: str               # "client.4235"
    cookie: str               # "auto 94823928102912"
    addr: str

    @property
    def watch_cookie(self) -> Optional[int]:
        parts = self.cookie.split()
        if len(parts) == 2 and parts[0] == "auto" and parts[1].isdigit():
            return int(parts[1])
        return None


class ImageFacts(NamedTuple):
    spec: str                           # "pool/image" or "pool/namespace/image"
    exists: bool = True
    permission_denied: bool = False
    error: Optional[str] = None         # any other failure to inspect
    lock_tag: Optional[str] = None      # list_lockers()'s tag: 'internal' for librbd's lock
    lockers: Tuple[Locker, ...] = ()
    watchers: Tuple[Watcher, ...] = ()


class Owner(NamedTuple):
    node: Optional[str]
    state: str                          # one of NODE_STATES
    source: str = ""                    # how it was learnt: "node_addresses", "attribute", "dns"
    note: str = ""                      # why this state, for exit reasons
    # GONE because the address is blocklisted host-wide in the OSD map (fence_vmceph):
    # every client on it is already cut off, recovery only breaks locks (apply_ceph_fences)
    host_blocklisted: bool = False


class Facts(NamedTuple):
    quorum_ok: bool
    quorum_detail: str                  # "quorum a,b,c" or why not, with the time spent
    images: Tuple[ImageFacts, ...]
    owners: dict                        # IP -> Owner; missing IP = unknown
    local_node: str
    domain_active_here: bool
    unknown_policy: str = UNKNOWN_REFUSE
    # False unless the adapters could read the cluster's membership: recovery needs it.
    membership_known: bool = False
    # How long start looked again at lock holders with no watch, or at watchers holding no
    # lock on a live member (facts._retry_watchless); the refusal says so.
    retried_s: float = 0.0
    # Client instances on this node proven dead: this domain's previous QEMU, whose process
    # is gone (vmceph.deadclients), with the note that says so. Only start sets them.
    dead_local: frozenset = frozenset()
    dead_local_note: str = ""
    # (node, client instance) pairs that node itself attested dead: its stop proved the
    # domain's QEMU gone but could not reach Ceph to release its clients (deadclients,
    # node attribute vmceph-dead-<resource>). Honoured only for the address's owner node.
    dead_attested: frozenset = frozenset()


class Recovery(NamedTuple):
    """One client to fence off an image: blocklist ``addr``, then break its lock if held."""
    image: str
    addr: str
    entity: str
    node: Optional[str]
    why: str
    cookie: Optional[str] = None        # set when the client holds the exclusive lock
    # already cut off by a host-wide entry in the OSD map: no entry of our own is added
    blocklisted: bool = False

    def describe(self):
        lock = " and break its lock (%s)" % self.cookie if self.cookie else ""
        if self.blocklisted:
            return "image %s: %s at %s (node %s: %s) is already blocklisted host-wide (%s); " \
                "no new entry%s" % (self.image, self.entity, self.addr, self.node or "unknown",
                                    self.why, host_entry(ip_of(self.addr)),
                                    ", break its lock (%s)" % self.cookie if self.cookie else "")
        return "image %s: blocklist %s at %s (node %s: %s)%s" % (
            self.image, self.entity, self.addr, self.node or "unknown", self.why, lock)


class Verdict(NamedTuple):
    kind: str
    reasons: Tuple[str, ...] = ()
    recoveries: Tuple[Recovery, ...] = ()

    @property
    def may_start(self):
        return self.kind in (START, RECOVER_THEN_START, ALREADY_RUNNING)

    def summary(self):
        return "; ".join(self.reasons) if self.reasons else self.kind


def ip_of(addr):
    """IP part of a Ceph entity address: '10.0.0.1:0/123' -> '10.0.0.1';
    'v2:10.0.0.1:6800/123' -> '10.0.0.1'; '[v2:...,v1:...]' -> first; '[::1]:0/5' -> '::1'."""
    a = addr.strip()
    if a.startswith("[") and ("v2:" in a or "v1:" in a):
        a = a[1:].split(",")[0].rstrip("]")
    for prefix in ("v2:", "v1:", "any:"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    a = a.split("/")[0]
    if a.startswith("["):
        return a[1:].split("]")[0]
    return a.rsplit(":", 1)[0] if ":" in a else a


def instance_addr(addr):
    """True if ``addr`` names one client instance, 'ip:port/nonce' with nonce > 0.
    'ip:0/0' (or a bare IP, which the monitors store as ip:0/0) blocklists every client of
    the host, this node's own sessions included when it is ours."""
    a = addr.strip()
    for prefix in ("v2:", "v1:", "any:"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    head, sep, nonce = a.rpartition("/")
    if not sep or not nonce.isdigit() or int(nonce) == 0 or ":" not in head:
        return False
    return bool(ip_of(a)) and head.rsplit(":", 1)[1].isdigit()


# ------------------------------------------------------------ nodes fenced through Ceph

# The Pacemaker states a proof of fencing through Ceph may turn into GONE: a node that is
# lost (UNCLEAN: fencing pending or failed as far as Pacemaker knows), that left, or that is
# fenced already. Never a live member, this node, a node in maintenance, an address two
# sources disagree on, or an address no source maps: Pacemaker may run the domain there, and
# a host-wide entry on such an address is someone's mistake, not a fence of that node.
CEPH_FENCEABLE = (UNCLEAN, LEFT, GONE)
FENCE_RECORD_SOURCE = "fence_vmceph record"


def host_entry(ip):
    """The blocklist entry that cuts off every client instance on ``ip`` (fence_vmceph)."""
    return "[%s]:0/0" % ip if ":" in ip else "%s:0/0" % ip


def host_blocklisted(entries):
    """{ip: until} of the host-wide entries among ``entries`` ([(addr, until epoch or
    None)], 'osd blocklist ls'). Host-wide = port 0 and nonce 0: the OSDs refuse a client
    whose address, or whose IP with port 0 and nonce 0, is listed. An entry with a port
    ('10.0.0.4:6800/0') or a nonce names one endpoint or one instance only."""
    out = {}
    for addr, until in entries:
        a = (addr or "").strip()
        for prefix in ("v2:", "v1:", "any:"):
            if a.startswith(prefix):
                a = a[len(prefix):]
        if a.endswith(":0/0") and ip_of(a):
            ip = ip_of(a)
            prev = out.get(ip, 0.0)
            out[ip] = None if until is None or prev is None else max(prev, until)
    return out


def _utc(epoch):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def apply_ceph_fences(owners, blocked, now, min_left_s, records=None):
    """``owners`` (IP -> Owner) with every address that Ceph provably cuts off made GONE
    (``host_blocklisted``): its owner is lost or gone (CEPH_FENCEABLE) and the OSD blocklist
    holds its host-wide entry until at least ``now + min_left_s`` (as long as the entry
    this agent would add itself lasts: blocklist_expire; an entry of unknown expiry does not
    count). Every client on such an address is refused by the OSDs already: recovery only
    breaks its locks (issue 12, item 3).

    ``blocked``: host_blocklisted()'s {ip: until}. ``records``: {node: the record
    fence_vmceph keeps of what it added} when it could be read: quoted in the note, and a
    source of the address besides name resolution when it names this IP for this node.
    The entries are the proof, never a record alone: a record outlives its entries when
    'on' removed them but could not remove the record (fence.py), or when someone removed
    the entries by hand."""
    records = records or {}
    out = dict(owners)
    for ip, owner in owners.items():
        if owner.state not in CEPH_FENCEABLE or owner.node is None or ip not in blocked:
            continue
        until = blocked[ip]
        if until is None or until < now + min_left_s:
            continue
        rec = records.get(owner.node)
        recorded = isinstance(rec, dict) and ip in (rec.get("ips") or ()) and \
            rec.get("node", owner.node) == owner.node
        source = owner.source
        if source == DNS_SOURCE and recorded:
            source = FENCE_RECORD_SOURCE
        when = rec.get("time") if recorded else None
        note = "fenced through Ceph: host-wide entry %s in the OSD blocklist until %s%s" % (
            host_entry(ip), _utc(until),
            ("; fence_vmceph fenced it at %s" % _utc(when)) if isinstance(when, (int, float))
            else "; fence_vmceph's record of it" if recorded else "")
        out[ip] = owner._replace(state=GONE, source=source, note=note, host_blocklisted=True)
    return out

# ------------------------------------------------------------------ the classifier

class ClientView(NamedTuple):
    """One client of an image as the classifier sees it."""
    entity: str
    addr: str
    owner: Owner
    watching: bool                      # has a live watch (open read-write)
    lock_cookie: Optional[str]          # the exclusive lock it holds, if any
    category: str                       # OURS, BLOCKS or FENCE
    why: str                            # one sentence: why this category

    def recovery(self, spec):
        return Recovery(spec, self.addr, self.entity, self.owner.node, self.why,
                        self.lock_cookie, self.owner.host_blocklisted)


class ImageView(NamedTuple):
    """classify_image's answer for one image."""
    spec: str
    status: str                         # "ok", "missing", "denied", "error"
    detail: str = ""                    # the inspection error
    clients: Tuple[ClientView, ...] = ()
    foreign_locks: Tuple[str, ...] = () # one sentence per lock that is not librbd's

    @property
    def inspected(self):
        return self.status == "ok"

    def of(self, category):
        return tuple(c for c in self.clients if c.category == category)

    @property
    def ours(self):
        return self.of(OURS)

    @property
    def blockers(self):
        return self.of(BLOCKS)

    @property
    def fenced(self):
        return self.of(FENCE)

    @property
    def retryable(self):
        """Refused only for lock holders with no watch: a watch re-registers within
        seconds after an OSD failover or a network blip, so look again."""
        b = self.blockers
        return bool(b) and not self.foreign_locks and all(not c.watching for c in b)

    @property
    def lingering(self):
        """Refused only for clients of live members that watch without holding the lock.
        A client that died (a QEMU killed or destroyed, a migration target's incoming
        QEMU among them) keeps its watch until the OSDs time it out
        (osd_client_watch_timeout, 30 s): the chaos soak saw a migration's target QEMU,
        destroyed by its node's stop, refused as a live member's writer by every start
        until Pacemaker had banned the VM everywhere (docs/reliability.md, seed 1205,
        faults 14 and 26). So look again until that timeout: a live one is still there
        and is refused then; a dead one is gone, and nothing is left to recover."""
        return self.may_be_lingering(domain_active_here=True)

    def may_be_lingering(self, domain_active_here):
        """``lingering``, and, while the domain does not run on this node, this node's own
        clients that watch without holding the lock: they are refused as "open read-write
        on this node by a client that is not this domain", and the same dead QEMU leaves
        them. Seen in the chaos soak (docs/reliability.md, seed 1207, fault 39): the
        source of vm3's migration died with its node; node3's stop destroyed the incoming
        QEMU (paused, lockless: no migrate_from had run, so nothing recorded its client);
        node3's start 4 s later refused its lingering watch, the fail count banned vm3
        there, and vm3 ran nowhere until an operator cleaned up."""
        suspects = self.blockers + (() if domain_active_here else self.ours)
        return bool(suspects) and not self.foreign_locks and all(
            c.watching and c.lock_cookie is None
            and (c.category == OURS or c.owner.state == MEMBER) for c in suspects)

    def recoveries(self):
        return tuple(c.recovery(self.spec) for c in self.fenced)


def _where(owner, addr, entity):
    return "%s at %s on %s" % (entity, addr, owner.node or "an unknown node")


def _owner(facts, addr):
    return facts.owners.get(ip_of(addr), Owner(None, UNKNOWN))


def _judge(facts, spec, entity, addr, watching):
    """(category, why) of one client that is not on this node with a watch."""
    owner = _owner(facts, addr)
    where = _where(owner, addr, entity)
    note = " (%s)" % owner.note if owner.note else ""
    st = owner.state
    if watching:
        what = "image %s is open read-write by %s%s" % (
            spec, where, " (still, after looking again for %.0f s: the watch of a client "
            "that died lapses within 30 s)" % facts.retried_s
            if facts.retried_s else "")
    else:
        what = ("image %s's exclusive lock is held by %s with no watch (a watch re-registers "
                "after an OSD failover or a network blip%s)"
                % (spec, where, "; none did while looking again for %.0f s"
                   % facts.retried_s if facts.retried_s else ""))
    if st == LOCAL and addr in facts.dead_local:
        return _judge_dead_local(facts, spec, entity, addr, False)
    if st in ATTESTABLE and owner.source != DNS_SOURCE and \
            (owner.node, addr) in facts.dead_attested:
        return _judge_dead_attested(facts, spec, entity, addr, owner, watching)
    if st == LOCAL:
        # only a holder with no watch gets here (a local watcher is OURS)
        return BLOCKS, what + ", this node: refusing"
    if st == MEMBER:
        return BLOCKS, what + ", a live cluster member%s: refusing a second writer (stop or " \
            "migrate the domain there first)" % note
    if st == UNCLEAN:
        return BLOCKS, what + ", a node that is lost but not yet fenced%s: refusing until " \
            "Pacemaker has fenced it" % note
    if st == MAINTENANCE:
        return BLOCKS, what + ", a node in maintenance%s: its VMs may still run; refusing" % note
    if st == CONFLICT:
        return BLOCKS, what + ": %s; refusing (fix node_addresses or the published " \
            "addresses)" % (owner.note or "sources disagree on this address")
    if st == LEFT and watching:
        return BLOCKS, what + ", a node that left the cluster cleanly but was not fenced " \
            "since, and the client still has a live watch: refusing"
    if st == LEFT and any(w.addr == addr for img in facts.images for w in img.watchers):
        # the same client instance watches another image: it is alive
        return BLOCKS, what + ", a node that left the cluster cleanly but was not fenced " \
            "since, and the client still watches another image: refusing"
    dns_only = owner.source == DNS_SOURCE
    if st in (GONE, LEFT):
        why = ("node fenced (%s)" % (owner.note or "Pacemaker's fencing history")
               if st == GONE else
               "node left the cluster cleanly (%s) and the client has no watch"
               % (owner.note or "offline, clean, not fenced since"))
        if dns_only:
            return BLOCKS, what + ", a node known only from name resolution for this " \
                "address: no proof to recover on; refusing (map it with node_addresses)"
    else:  # UNKNOWN
        if facts.unknown_policy != UNKNOWN_BLOCKLIST:
            return BLOCKS, what + ", an address no cluster node is known to use%s: refusing " \
                "(map it with node_addresses, or set unknown_client_policy=blocklist)" % note
        why = "unknown address, policy blocklist"
    if not facts.membership_known:
        return BLOCKS, what + ": cluster membership cannot be read, so nothing is recovered; " \
            "refusing"
    if not instance_addr(addr):
        return BLOCKS, what + ": %s is not the address of one client instance " \
            "(ip:port/nonce with nonce > 0); blocklisting it would fence every client of " \
            "that host: refusing" % addr
    return FENCE, why


def _judge_proven_dead(facts, what, addr, why):
    """FENCE for one client instance proven dead (``why``), if a recovery may act on it:
    membership readable, and ``addr`` the address of that one instance."""
    if not facts.membership_known:
        return BLOCKS, what + ": cluster membership cannot be read, so nothing is " \
            "recovered; refusing"
    if not instance_addr(addr):
        return BLOCKS, what + ": not the address of one client instance; refusing"
    return FENCE, why


def _lingers(watching):
    return " (its watch lingers)" if watching else " holds the lock with no watch"


def _judge_dead_local(facts, spec, entity, addr, watching):
    """A client instance on this node whose process is proven gone (``Facts.dead_local``):
    its watch may linger up to the OSD's watch timeout and its exclusive lock forever; it
    cannot write again once blocklisted, and no live process is harmed by that."""
    return _judge_proven_dead(
        facts, "image %s: %s at %s on this node%s" % (spec, entity, addr, _lingers(watching)),
        addr, facts.dead_local_note or "a client of a process of this node that is gone")


# Owner states in which a node's own word that one of its client instances is dead is
# taken: it is in the cluster (or was, and may still run other things), so nothing else
# proves that instance dead; the word covers that instance alone. Not CONFLICT (whose
# address?), not UNKNOWN (nobody's), not LOCAL (dead_local), not GONE/LEFT (already
# recoverable on their own evidence).
ATTESTABLE = (MEMBER, UNCLEAN, MAINTENANCE)


def _judge_dead_attested(facts, spec, entity, addr, owner, watching):
    """A client instance on another node that its own node attested dead
    (``Facts.dead_attested``): a stop destroyed its QEMU, or found it dead, while the node
    could not reach Ceph (storage-only partition), so its watch lingers up to the OSD's
    watch timeout and its lock stays; or the node's first probe after a reboot found the
    record of a QEMU from the earlier boot. Blocklisting that one instance harms no live
    process."""
    return _judge_proven_dead(
        facts, "image %s: %s at %s on %s%s" % (spec, entity, addr, owner.node,
                                              _lingers(watching)),
        addr, "attested dead by %s, where this domain's QEMU ran and is gone (a stop that "
        "could not reach Ceph to release it, or the node's first probe after a reboot)"
        % owner.node)


def classify_image(facts: Facts, img: ImageFacts) -> ImageView:
    """Every client of ``img`` with its owner and category (see the module docstring)."""
    if img.permission_denied:
        return ImageView(img.spec, "denied", "permission denied")
    if not img.exists:
        return ImageView(img.spec, "missing", img.error or "does not exist")
    if img.error:
        return ImageView(img.spec, "error", img.error)

    foreign = []
    ours_lock = {}                       # (addr, watch cookie) -> lock cookie
    holders = []
    for lk in img.lockers:
        if img.lock_tag not in (None, "internal") or lk.watch_cookie is None:
            foreign.append(
                "image %s has a lock that is not librbd's exclusive lock (tag %r, cookie %r, "
                "held by %s at %s): QEMU would hang on it; once no process uses it, remove it "
                "with: rbd lock rm %s '%s' %s"
                % (img.spec, img.lock_tag, lk.cookie, lk.entity, lk.addr, img.spec,
                   lk.cookie, lk.entity))
            continue
        ours_lock[(lk.addr, lk.watch_cookie)] = lk.cookie
        holders.append(lk)

    clients = []
    for w in img.watchers:
        cookie = ours_lock.get((w.addr, w.cookie))
        owner = _owner(facts, w.addr)
        if owner.state == LOCAL and w.addr in facts.dead_local:
            cat, why = _judge_dead_local(facts, img.spec, w.entity, w.addr, True)
            clients.append(ClientView(w.entity, w.addr, owner, True, cookie, cat, why))
            continue
        if owner.state == LOCAL:
            clients.append(ClientView(w.entity, w.addr, owner, True, cookie, OURS,
                                      "a writer on this node"))
            continue
        cat, why = _judge(facts, img.spec, w.entity, w.addr, True)
        clients.append(ClientView(w.entity, w.addr, owner, True, cookie, cat, why))
    watched = {(w.addr, w.cookie) for w in img.watchers}
    for lk in holders:
        if (lk.addr, lk.watch_cookie) in watched:
            continue
        cat, why = _judge(facts, img.spec, lk.entity, lk.addr, False)
        clients.append(ClientView(lk.entity, lk.addr, _owner(facts, lk.addr), False,
                                  lk.cookie, cat, why))
    return ImageView(img.spec, "ok", "", tuple(clients), tuple(foreign))


def _not_inspected(views, action):
    """The verdict for images that could not be inspected, or None."""
    for v in views:
        if v.status == "denied":
            return Verdict(PERM, ("permission denied inspecting RBD image %s: check the caps "
                                  "of the Ceph user (mon 'profile rbd', osd 'profile rbd')"
                                  % v.spec,))
    missing = [v.spec for v in views if v.status == "missing"]
    if missing:
        return Verdict(CONFIG, ("RBD image %s does not exist" % ", ".join(missing),))
    failed = [v for v in views if v.status == "error"]
    if failed:
        return Verdict(UNAVAILABLE, tuple("cannot inspect RBD image %s (%s): not %s without "
                                          "knowing its writers" % (v.spec, v.detail, action)
                                          for v in failed))
    return None


def _entities(clients):
    return ", ".join("%s at %s" % (c.entity, c.addr) for c in clients)


def decide_start(facts: Facts) -> Verdict:
    """The verdict for ``start`` (see the module table). Pure: same facts, same verdict."""
    if not facts.quorum_ok:
        return Verdict(UNAVAILABLE, ("Ceph is not usable: %s" % facts.quorum_detail,))
    views = [classify_image(facts, img) for img in facts.images]
    bad = _not_inspected(views, "starting")
    if bad is not None:
        return bad
    refusals, recoveries = [], []
    for v in views:
        refusals += v.foreign_locks
        refusals += [c.why for c in v.blockers]
        ours = v.ours
        if ours and not facts.domain_active_here:
            refusals.append("image %s is open read-write on this node (%s) by a client that "
                            "is not this domain%s: stop it first (e.g. 'rbd status %s' shows it)"
                            % (v.spec, _entities(ours), " (still, after looking again for "
                               "%.0f s)" % facts.retried_s if facts.retried_s else "", v.spec))
        elif len(ours) > 1:
            refusals.append("image %s has %d writers on this node while the domain runs here: "
                            "another process (%s) has it open read-write"
                            % (v.spec, len(ours), _entities(ours)))
        recoveries += v.recoveries()
    if refusals:
        return Verdict(REFUSE, tuple(refusals))
    if recoveries:
        extra = ("domain already running here",) if facts.domain_active_here else ()
        return Verdict(RECOVER_THEN_START, tuple(r.describe() for r in recoveries) + extra,
                       tuple(recoveries))
    if facts.domain_active_here:
        return Verdict(ALREADY_RUNNING, ("domain already running here and its QEMU is the only "
                                         "writer",))
    return Verdict(START, ("no other writer on %s" % ", ".join(i.spec for i in facts.images)
                           if facts.images else "no guarded RBD disks",))


def decide_migrate(facts: Facts, target: str, target_health: Optional[str]) -> Verdict:
    """May this node live-migrate the domain to ``target``?

    The domain runs here; after migration the target's QEMU must be the only writer. So:
    quorum, target not red for Ceph, every image inspected, no BLOCKS client and no foreign
    lock (a stale writer on the target itself, say a QEMU left over by a failed migration,
    is a second writer too), at most one writer here. FENCE clients cannot write: the next
    start recovers them.
    """
    if not facts.quorum_ok:
        return Verdict(UNAVAILABLE, ("Ceph is not usable: %s" % facts.quorum_detail,))
    if target_health == "red":
        return Verdict(REFUSE, ("target node %s reports #health-ceph=red: it cannot use Ceph, "
                                "the guest would freeze there" % target,))
    views = [classify_image(facts, img) for img in facts.images]
    bad = _not_inspected(views, "migrating")
    if bad is not None:
        return bad
    refusals = []
    for v in views:
        refusals += v.foreign_locks
        refusals += ["refusing to migrate while a second writer exists: " + c.why
                     for c in v.blockers]
        if len(v.ours) > 1:
            refusals.append("image %s has %d writers on this node" % (v.spec, len(v.ours)))
    if refusals:
        return Verdict(REFUSE, tuple(refusals))
    return Verdict(START, ("target %s healthy (%s), no other writer" % (target, target_health or
                                                                         "health unknown"),))


class WriterCheck(NamedTuple):
    """Deep monitor (depth 20): is this node's QEMU the only writer of each guarded image?
    ``problems`` fail the monitor; ``warnings`` are logged (could not check, stale clients)."""
    ok: bool
    problems: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()


def check_sole_writer(facts: Facts) -> WriterCheck:
    if not facts.quorum_ok:
        return WriterCheck(True, (), ("cannot check the writers of the RBD images: Ceph is not "
                                      "usable: %s" % facts.quorum_detail,))
    problems, warnings = [], []
    for v in (classify_image(facts, img) for img in facts.images):
        if v.status == "missing":
            problems.append("RBD image %s has disappeared" % v.spec)
            continue
        if not v.inspected:
            warnings.append("cannot check the writers of RBD image %s: %s" % (v.spec, v.detail))
            continue
        problems += ["SPLIT BRAIN: " + f for f in v.foreign_locks]
        problems += ["SPLIT BRAIN: " + c.why for c in v.blockers]
        warnings += ["stale client of RBD image %s: %s (%s); the next start recovers it"
                     % (v.spec, c.entity, c.why) for c in v.fenced]
        ours = v.ours
        if not ours:
            problems.append("image %s has no writer on this node: the domain's QEMU lost its "
                            "Ceph session (blocklisted?)" % v.spec)
        elif len(ours) > 1:
            problems.append("image %s has %d writers on this node" % (v.spec, len(ours)))
    return WriterCheck(not problems, tuple(problems), tuple(warnings))
