"""The start decision table (README.md, issue 10), as data: one row per situation, a test each.

The expected verdicts are written here by hand from the specification (the project's safety
contract, "The decision at start", issue 10 "What to build"), not computed: a wrong rule in
safety.py fails its row. Each row gives the clients of one image - where each client lives,
and whether it has a watch (open read-write) and/or holds the exclusive lock - plus the
cluster facts, and the expected answer of all three decisions that share the classifier:

- start: verdict kind and the clients recovered, as (label, lock broken?);
- migrate_to (only when the domain runs here): verdict kind;
- deep monitor (only when the domain runs here): "ok", "warn" (success, logged) or
  "problem" (the monitor fails).
"""

from typing import NamedTuple, Optional, Tuple

import pytest

from vmceph import safety
from vmceph.safety import (ALREADY_RUNNING, CONFIG, PERM, RECOVER_THEN_START, REFUSE, START,
                           UNAVAILABLE, Facts, ImageFacts, Locker, Owner, Watcher,
                           check_sole_writer, decide_migrate, decide_start)

# Where a client lives -> its IP, and who the cluster says owns that IP.
IPS = {"ours": "10.0.0.1", "local": "10.0.0.1", "member": "10.0.0.2", "unclean": "10.0.0.3",
       "fenced": "10.0.0.4", "left": "10.0.0.5", "maint": "10.0.0.6", "conflict": "10.0.0.7",
       "dns-fenced": "10.0.0.8", "unknown": "192.0.2.99"}
OWNERS = {
    "10.0.0.1": Owner("node1", safety.LOCAL, "own session"),
    "10.0.0.2": Owner("node2", safety.MEMBER, "attribute vmceph-ceph-addrs"),
    "10.0.0.3": Owner("node3", safety.UNCLEAN, "attribute vmceph-ceph-addrs"),
    "10.0.0.4": Owner("node4", safety.GONE, "attribute vmceph-ceph-addrs", "fenced at ..."),
    "10.0.0.5": Owner("node5", safety.LEFT, "node_addresses"),
    "10.0.0.6": Owner("node6", safety.MAINTENANCE, "node_addresses"),
    "10.0.0.7": Owner("node7", safety.CONFLICT, "node_addresses",
                      "address 10.0.0.7 is given to node7 and node8"),
    "10.0.0.8": Owner("node8", safety.GONE, safety.DNS_SOURCE),
    # 192.0.2.99: no source knows it
}


class C(NamedTuple):
    """A client: label (unique in the row), where it lives, watch?, lock?, address form."""
    label: str
    where: str
    watch: bool = True
    lock: bool = False
    nonce0: bool = False


class Row(NamedTuple):
    id: str
    clients: Tuple[C, ...] = ()
    active: bool = False
    quorum: bool = True
    known: bool = True                  # membership could be read
    policy: str = safety.UNKNOWN_REFUSE
    image: str = "ok"                   # ok | missing | denied | error
    lock_tag: Optional[str] = "internal"
    lock_cookie: Optional[str] = None   # overrides 'auto <watch cookie>'
    start: str = START
    recovered: frozenset = frozenset()  # {(label, lock broken?)}
    migrate: Optional[str] = None       # expected when active
    monitor: Optional[str] = None       # expected when active


OURS = C("q", "ours", lock=True)        # our running domain's QEMU, holding the lock
OURS_W = C("q", "ours")                 # our QEMU, someone else holds the lock


def R(*pairs):
    return frozenset(pairs)


TABLE = [
    # ---- Ceph not usable / image not inspectable
    Row("no-quorum", (C("m", "member", lock=True),), quorum=False, start=UNAVAILABLE),
    Row("no-quorum-running", (OURS,), active=True, quorum=False,
        start=UNAVAILABLE, migrate=UNAVAILABLE, monitor="warn"),
    Row("image-missing", image="missing", start=CONFIG),
    Row("image-missing-running", image="missing", active=True,
        start=CONFIG, migrate=CONFIG, monitor="problem"),
    Row("permission-denied", image="denied", start=PERM),
    Row("permission-denied-running", image="denied", active=True,
        start=PERM, migrate=PERM, monitor="warn"),
    Row("inspection-error", image="error", start=UNAVAILABLE),
    # an image that could not be inspected is never a reason to migrate; a warning for
    # the monitor
    Row("inspection-error-running", image="error", active=True,
        start=UNAVAILABLE, migrate=UNAVAILABLE, monitor="warn"),
    # ---- no other writer
    Row("no-writers", start=START),
    Row("running-our-qemu-only-writer", (OURS,), active=True,
        start=ALREADY_RUNNING, migrate=START, monitor="ok"),
    Row("running-but-no-writer-here", (), active=True,
        start=ALREADY_RUNNING, migrate=START, monitor="problem"),
    # ---- this node
    Row("local-writer-not-our-domain", (C("l", "local", lock=True),), start=REFUSE),
    Row("two-writers-here", (OURS, C("l2", "local")), active=True,
        start=REFUSE, migrate=REFUSE, monitor="problem"),
    Row("local-holder-without-watch", (C("l", "local", watch=False, lock=True),),
        start=REFUSE),
    # ---- live member, unclean, maintenance
    Row("member-writer", (C("m", "member", lock=True),), start=REFUSE),
    Row("member-writer-while-running", (OURS, C("m", "member")), active=True,
        start=REFUSE, migrate=REFUSE, monitor="problem"),
    Row("member-holder-without-watch", (C("m", "member", watch=False, lock=True),),
        start=REFUSE),
    Row("member-holder-without-watch-running", (OURS_W, C("m", "member", watch=False,
                                                          lock=True)), active=True,
        start=REFUSE, migrate=REFUSE, monitor="problem"),
    Row("unclean-writer", (C("u", "unclean", lock=True),), start=REFUSE),
    Row("unclean-holder-without-watch", (C("u", "unclean", watch=False, lock=True),),
        start=REFUSE),
    Row("maintenance-writer", (C("x", "maint", lock=True),), start=REFUSE),
    Row("maintenance-holder-without-watch", (C("x", "maint", watch=False, lock=True),),
        start=REFUSE),
    # ---- fenced (confirmed by the fencing history)
    Row("fenced-writer-holding-lock", (C("f", "fenced", lock=True),),
        start=RECOVER_THEN_START, recovered=R(("f", True))),
    Row("fenced-writer-no-lock", (C("f", "fenced"),),
        start=RECOVER_THEN_START, recovered=R(("f", False))),
    Row("fenced-holder-without-watch", (C("f", "fenced", watch=False, lock=True),),
        start=RECOVER_THEN_START, recovered=R(("f", True))),
    Row("fenced-stale-writer-while-running", (OURS_W, C("f", "fenced", lock=True)),
        active=True, start=RECOVER_THEN_START, recovered=R(("f", True)),
        migrate=START, monitor="warn"),
    Row("fenced-and-member", (C("f", "fenced", lock=True), C("m", "member")), start=REFUSE),
    Row("fenced-but-membership-unreadable", (C("f", "fenced", lock=True),), known=False,
        start=REFUSE),
    Row("fenced-known-only-from-dns", (C("d", "dns-fenced", lock=True),), start=REFUSE),
    Row("fenced-holder-nonce-0", (C("f", "fenced", watch=False, lock=True, nonce0=True),),
        start=REFUSE),
    # ---- left cleanly (offline, clean, not fenced since)
    Row("left-holder-without-watch", (C("l", "left", watch=False, lock=True),),
        start=RECOVER_THEN_START, recovered=R(("l", True))),
    Row("left-writer-with-live-watch", (C("l", "left", lock=True),), start=REFUSE),
    Row("left-holder-membership-unreadable", (C("l", "left", watch=False, lock=True),),
        known=False, start=REFUSE),
    # ---- unknown addresses
    Row("unknown-writer-refuse-policy", (C("z", "unknown", lock=True),), start=REFUSE),
    Row("unknown-writer-blocklist-policy", (C("z", "unknown", lock=True),),
        policy=safety.UNKNOWN_BLOCKLIST, start=RECOVER_THEN_START, recovered=R(("z", True))),
    Row("unknown-writer-blocklist-policy-membership-unreadable", (C("z", "unknown"),),
        policy=safety.UNKNOWN_BLOCKLIST, known=False, start=REFUSE),
    Row("unknown-holder-without-watch-refuse-policy",
        (C("z", "unknown", watch=False, lock=True),), start=REFUSE),
    Row("unknown-holder-without-watch-blocklist-policy",
        (C("z", "unknown", watch=False, lock=True),), policy=safety.UNKNOWN_BLOCKLIST,
        start=RECOVER_THEN_START, recovered=R(("z", True))),
    Row("unknown-writer-while-running", (OURS, C("z", "unknown")), active=True,
        start=REFUSE, migrate=REFUSE, monitor="problem"),
    Row("address-claimed-by-two-nodes", (C("c", "conflict"),), start=REFUSE),
    # ---- locks that are not librbd's exclusive lock
    Row("foreign-lock-tag", (C("m", "member", watch=False, lock=True),), lock_tag="backup",
        start=REFUSE),
    Row("foreign-lock-cookie-on-fenced-node", (C("f", "fenced", watch=False, lock=True),),
        lock_cookie="my-cookie", start=REFUSE),
    Row("foreign-lock-while-running", (OURS_W, C("f", "fenced", watch=False, lock=True)),
        lock_tag="rbd-lock-add", active=True, start=REFUSE, migrate=REFUSE, monitor="problem"),
]


def build(row):
    watchers, lockers = [], []
    for n, c in enumerate(row.clients):
        gid = 4100 + n
        addr = "%s:0/0" % IPS[c.where] if c.nonce0 else "%s:0/%d" % (IPS[c.where], gid * 7)
        cookie = gid * 1000
        if c.watch:
            watchers.append(Watcher(addr, gid, cookie))
        if c.lock:
            lockers.append(Locker("client.%d" % gid, row.lock_cookie or "auto %d" % cookie,
                                  addr))
    if row.image == "missing":
        img = ImageFacts("rbd/vm1", exists=False)
    elif row.image == "denied":
        img = ImageFacts("rbd/vm1", permission_denied=True)
    elif row.image == "error":
        img = ImageFacts("rbd/vm1", error="inspect rbd/vm1 did not answer within 16.0 s")
    else:
        img = ImageFacts("rbd/vm1", lock_tag=row.lock_tag if lockers else None,
                         lockers=tuple(lockers), watchers=tuple(watchers))
    facts = Facts(quorum_ok=row.quorum,
                  quorum_detail="quorum a,b,c" if row.quorum else "no quorum (10.0 s spent)",
                  images=(img,), owners=OWNERS, local_node="node1",
                  domain_active_here=row.active, unknown_policy=row.policy,
                  membership_known=row.known)
    labels = {}
    for n, c in enumerate(row.clients):
        labels[(IPS[c.where], "client.%d" % (4100 + n))] = c.label
    return facts, labels


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_start(row):
    facts, labels = build(row)
    v = decide_start(facts)
    assert v.kind == row.start, v.reasons
    got = {(labels[(safety.ip_of(r.addr), r.entity)], r.cookie is not None)
           for r in v.recoveries}
    assert got == set(row.recovered), v.reasons
    assert v.reasons, "every verdict says why"
    assert v.may_start == (row.start in (START, ALREADY_RUNNING, RECOVER_THEN_START))


@pytest.mark.parametrize("row", [r for r in TABLE if r.migrate],
                         ids=[r.id for r in TABLE if r.migrate])
def test_migrate(row):
    facts, _ = build(row)
    v = decide_migrate(facts, "node2", "green")
    assert v.kind == row.migrate, v.reasons


@pytest.mark.parametrize("row", [r for r in TABLE if r.monitor],
                         ids=[r.id for r in TABLE if r.monitor])
def test_deep_monitor(row):
    facts, _ = build(row)
    r = check_sole_writer(facts)
    got = "problem" if not r.ok else ("warn" if r.warnings else "ok")
    assert got == row.monitor, r


def test_every_design_row_has_a_case():
    """The rows of the start table, by the ids that cover them."""
    design = {
        "no quorum": ["no-quorum"],
        "image missing, or no permission": ["image-missing", "permission-denied"],
        "domain already running here and its QEMU is the only writer":
            ["running-our-qemu-only-writer"],
        "a writer on a live member node": ["member-writer"],
        "a writer on this node that is not our running domain": ["local-writer-not-our-domain"],
        "a writer at an unknown address with a live watch": ["unknown-writer-refuse-policy",
                                                             "unknown-writer-blocklist-policy"],
        "a writer or lock holder on a node confirmed fenced, or gone cleanly with no watch":
            ["fenced-writer-holding-lock", "fenced-holder-without-watch",
             "left-holder-without-watch"],
        "a lock holder with no watch on a live member, an unclean node or this node":
            ["member-holder-without-watch", "unclean-holder-without-watch",
             "local-holder-without-watch"],
        "a lock holder with no watch at an unknown address":
            ["unknown-holder-without-watch-refuse-policy",
             "unknown-holder-without-watch-blocklist-policy"],
        "membership cannot be read": ["fenced-but-membership-unreadable"],
        "a lock that is not librbd's exclusive lock": ["foreign-lock-tag",
                                                       "foreign-lock-cookie-on-fenced-node"],
        "no writers": ["no-writers"],
    }
    ids = {r.id for r in TABLE}
    for situation, rows in design.items():
        assert set(rows) <= ids, situation


def test_refusal_wording_names_lock_tag_cookie_and_removal():
    row = next(r for r in TABLE if r.id == "foreign-lock-tag")
    facts, _ = build(row)
    text = decide_start(facts).summary()
    for part in ("rbd/vm1", "'backup'", "auto 4100000", "client.4100", "rbd lock rm rbd/vm1 "
                 "'auto 4100000' client.4100"):
        assert part in text, text


def test_watchless_holder_refusal_says_so_and_is_retryable():
    row = next(r for r in TABLE if r.id == "member-holder-without-watch")
    facts, _ = build(row)
    v = decide_start(facts)
    assert "no watch" in v.summary() and "live cluster member" in v.summary()
    assert safety.classify_image(facts, facts.images[0]).retryable
    # a live writer elsewhere is not worth waiting for
    row = next(r for r in TABLE if r.id == "member-writer")
    facts, _ = build(row)
    assert not safety.classify_image(facts, facts.images[0]).retryable


@pytest.mark.parametrize("rid,fragment", [
    ("fenced-but-membership-unreadable", "membership cannot be read"),
    ("fenced-known-only-from-dns", "only from name resolution"),
    ("fenced-holder-nonce-0", "nonce > 0"),
    ("address-claimed-by-two-nodes", "given to node7 and node8"),
    ("left-writer-with-live-watch", "still has a live watch"),
    ("maintenance-writer", "maintenance"),
])
def test_refusals_say_why(rid, fragment):
    row = next(r for r in TABLE if r.id == rid)
    facts, _ = build(row)
    v = decide_start(facts)
    assert v.kind == REFUSE and fragment in v.summary(), v.summary()
