"""The start decision: may this node start this domain now, and what must be recovered first?

A pure function over facts the adapters gathered (ceph.py, virt.py, cluster.py). No I/O
here, so unit tests cover every combination of the table in DESIGN.md:

| situation                                               | verdict                     |
|---------------------------------------------------------|-----------------------------|
| no quorum / Ceph unreachable within the deadline        | UNAVAILABLE (fail)          |
| image missing / no permission                           | CONFIG / PERM (fail)        |
| a writer on a live member node other than this one      | REFUSE                      |
| a writer on a node that is lost but not yet fenced      | REFUSE (Pacemaker fences it)|
| a writer on this node that is not our running domain    | REFUSE                      |
| a writer at an unknown address with a live watch        | REFUSE, or recover if policy|
| a writer / lock holder on a fenced or non-member node   | RECOVER (blocklist + break) |
| a lock holder with no watch (dead or partitioned)       | RECOVER (blocklist + break) |
| domain running here and its QEMU is the only writer     | ALREADY_RUNNING             |
| no writers                                              | START                       |

"Writer" = a client with the image open read-write = a watcher. The exclusive-lock holder
(``list_lockers()``: tag ``internal``, cookie ``auto <n>``) is alive iff a watcher has the
same address and watch cookie ``<n>`` (CEPH-FACTS.md).
"""

from typing import NamedTuple, Optional, Tuple

# The fact and verdict types are NamedTuples, not dataclasses: immutable and compared by
# value all the same, without the 8.5 ms 'import dataclasses' costs every start here
# (python3 -X importtime; typing is loaded by libvirt anyway).

# Where a Ceph client lives, as far as the cluster knows.
LOCAL = "local"          # this node
MEMBER = "member"        # a live cluster member (online, not unclean)
UNCLEAN = "unclean"      # lost, fencing pending or failed: it may still be writing
GONE = "gone"            # fenced, or cleanly out of the cluster: cannot be writing
UNKNOWN = "unknown"      # an address no source maps to a node

NODE_STATES = (LOCAL, MEMBER, UNCLEAN, GONE, UNKNOWN)

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
    error: Optional[str] = None         # any other failure to inspect (fails the decision)
    lock_tag: Optional[str] = None
    lockers: Tuple[Locker, ...] = ()
    watchers: Tuple[Watcher, ...] = ()


class Owner(NamedTuple):
    node: Optional[str]
    state: str                          # one of NODE_STATES
    source: str = ""                    # how it was learnt: "node_addresses", "attribute", "dns"


class Facts(NamedTuple):
    quorum_ok: bool
    quorum_detail: str                  # "quorum a,b,c" or why not, with the time spent
    images: Tuple[ImageFacts, ...]
    owners: dict                        # IP -> Owner; missing IP = unknown
    local_node: str
    domain_active_here: bool
    unknown_policy: str = UNKNOWN_REFUSE


class Recovery(NamedTuple):
    """One client to fence off an image: blocklist ``addr``, then break its lock if held."""
    image: str
    addr: str
    entity: str
    node: Optional[str]
    why: str
    cookie: Optional[str] = None        # set when the client holds the exclusive lock

    def describe(self):
        lock = " and break its lock (%s)" % self.cookie if self.cookie else ""
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


def _owner(facts, addr):
    return facts.owners.get(ip_of(addr), Owner(None, UNKNOWN))


def _where(owner, addr, entity):
    node = owner.node or "an unknown node"
    return "%s at %s on %s" % (entity, addr, node)


def decide_start(facts: Facts) -> Verdict:
    """The verdict for ``start`` (see the module table). Pure: same facts, same verdict."""
    if not facts.quorum_ok:
        return Verdict(UNAVAILABLE, ("Ceph is not usable: %s" % facts.quorum_detail,))

    for img in facts.images:
        if img.permission_denied:
            return Verdict(PERM, ("permission denied inspecting RBD image %s: check the caps "
                                  "of the Ceph user (mon 'profile rbd', osd 'profile rbd')"
                                  % img.spec,))
    missing = [i.spec for i in facts.images if not i.exists]
    if missing:
        return Verdict(CONFIG, ("RBD image %s does not exist" % ", ".join(missing),))
    failed = [i for i in facts.images if i.error]
    if failed:
        return Verdict(UNAVAILABLE, tuple("cannot inspect RBD image %s: %s" % (i.spec, i.error)
                                          for i in failed))

    refusals, recoveries, local_writers = [], [], []
    for img in facts.images:
        r, rec, loc = _judge_image(facts, img)
        refusals += r
        recoveries += rec
        local_writers += loc

    # Writers on this node: with our domain running, exactly one per image is its QEMU.
    per_image = {}
    for spec, w in local_writers:
        per_image.setdefault(spec, []).append(w)
    for spec, ws in sorted(per_image.items()):
        if not facts.domain_active_here:
            refusals.append("image %s is open read-write on this node (%s) by a client that is "
                            "not this domain: stop it first (e.g. 'rbd status %s' shows it)"
                            % (spec, ", ".join(w.entity + " at " + w.addr for w in ws), spec))
        elif len(ws) > 1:
            refusals.append("image %s has %d writers on this node while the domain runs here: "
                            "another process (%s) has it open read-write"
                            % (spec, len(ws), ", ".join(w.entity + " at " + w.addr for w in ws)))

    if refusals:
        return Verdict(REFUSE, tuple(refusals))
    if recoveries:
        if facts.domain_active_here:
            # Our domain runs here, yet stale clients linger elsewhere: clean them up, the
            # start itself is a no-op.
            return Verdict(RECOVER_THEN_START, tuple(r.describe() for r in recoveries) +
                           ("domain already running here",), tuple(recoveries))
        return Verdict(RECOVER_THEN_START, tuple(r.describe() for r in recoveries),
                       tuple(recoveries))
    if facts.domain_active_here:
        return Verdict(ALREADY_RUNNING, ("domain already running here and its QEMU is the only "
                                         "writer",))
    return Verdict(START, ("no other writer on %s" % ", ".join(i.spec for i in facts.images)
                           if facts.images else "no guarded RBD disks",))


def _judge_image(facts, img):
    """(refusals, recoveries, local writers) for one image."""
    refusals, recoveries, local = [], [], []
    watched = {(ip_of(w.addr), w.addr, w.cookie) for w in img.watchers}
    holder = {}  # addr -> Locker
    for lk in img.lockers:
        holder[lk.addr] = lk

    for w in img.watchers:
        owner = _owner(facts, w.addr)
        lk = holder.get(w.addr)
        cookie = lk.cookie if lk and lk.watch_cookie == w.cookie else None
        if owner.state == LOCAL:
            local.append((img.spec, w))
        elif owner.state == MEMBER:
            refusals.append("image %s is open read-write by %s, a live cluster member: "
                            "refusing a second writer (stop or migrate the domain there first)"
                            % (img.spec, _where(owner, w.addr, w.entity)))
        elif owner.state == UNCLEAN:
            refusals.append("image %s is open by %s, a node that is lost but not yet fenced: "
                            "refusing until Pacemaker has fenced it"
                            % (img.spec, _where(owner, w.addr, w.entity)))
        elif owner.state == GONE:
            recoveries.append(Recovery(img.spec, w.addr, w.entity, owner.node,
                                       "fenced or not a cluster member", cookie))
        else:
            if facts.unknown_policy == UNKNOWN_BLOCKLIST:
                recoveries.append(Recovery(img.spec, w.addr, w.entity, None,
                                           "unknown address, policy blocklist", cookie))
            else:
                refusals.append("image %s is open read-write by %s at %s, an address no cluster "
                                "node is known to use: refusing (map it with node_addresses, or "
                                "set unknown_client_policy=blocklist)"
                                % (img.spec, w.entity, w.addr))

    # A lock holder with no watch: its client is dead or cut off from the OSDs. librbd would
    # wait ~30 s (osd_client_watch_timeout) before taking the lock over; blocklist it first so
    # it cannot write when it comes back, then break the lock.
    for lk in img.lockers:
        alive = any(addr == lk.addr and (lk.watch_cookie is None or cookie == lk.watch_cookie)
                    for _ip, addr, cookie in watched)
        if alive:
            continue
        owner = _owner(facts, lk.addr)
        if any(r.addr == lk.addr for r in recoveries):
            continue
        recoveries.append(Recovery(img.spec, lk.addr, lk.entity, owner.node,
                                   "holds the exclusive lock with no watch (dead or cut off)",
                                   lk.cookie))
    return refusals, recoveries, local


def decide_migrate(facts: Facts, target: str, target_health: Optional[str]) -> Verdict:
    """May this node live-migrate the domain to ``target``?

    The domain runs here; after migration the target's QEMU must be the only writer. So:
    quorum, target not red for Ceph, and no writer other than this node's QEMU (one per image).
    A stale writer on the target itself (say, a QEMU left over by a failed migration) is a
    second writer too.
    """
    if not facts.quorum_ok:
        return Verdict(UNAVAILABLE, ("Ceph is not usable: %s" % facts.quorum_detail,))
    if target_health == "red":
        return Verdict(REFUSE, ("target node %s reports #health-ceph=red: it cannot use Ceph, "
                                "the guest would freeze there" % target,))
    refusals = []
    for img in facts.images:
        if not img.exists:
            return Verdict(CONFIG, ("RBD image %s does not exist" % img.spec,))
        locals_ = 0
        for w in img.watchers:
            owner = _owner(facts, w.addr)
            if owner.state == LOCAL:
                locals_ += 1
            elif owner.state == GONE:
                continue  # a fenced node cannot write; start-time recovery handles leftovers
            else:
                refusals.append("image %s is also open read-write by %s: refusing to migrate "
                                "while a second writer exists"
                                % (img.spec, _where(owner, w.addr, w.entity)))
        if locals_ > 1:
            refusals.append("image %s has %d writers on this node" % (img.spec, locals_))
    if refusals:
        return Verdict(REFUSE, tuple(refusals))
    return Verdict(START, ("target %s healthy (%s), no other writer" % (target, target_health or
                                                                         "health unknown"),))


class WriterCheck(NamedTuple):
    """Deep monitor (depth 20): is this node's QEMU the only writer of each guarded image?"""
    ok: bool
    problems: Tuple[str, ...] = ()


def check_sole_writer(facts: Facts) -> WriterCheck:
    problems = []
    for img in facts.images:
        if not img.exists:
            problems.append("RBD image %s has disappeared" % img.spec)
            continue
        local = 0
        for w in img.watchers:
            owner = _owner(facts, w.addr)
            if owner.state == LOCAL:
                local += 1
            elif owner.state != GONE:
                problems.append("SPLIT BRAIN: image %s is also open read-write by %s"
                                % (img.spec, _where(owner, w.addr, w.entity)))
        if local == 0:
            problems.append("image %s has no writer on this node: the domain's QEMU lost its "
                            "Ceph session (blocklisted?)" % img.spec)
        elif local > 1:
            problems.append("image %s has %d writers on this node" % (img.spec, local))
    return WriterCheck(not problems, tuple(problems))
