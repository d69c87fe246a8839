"""Invariants of the decisions over random fact sets (hypothesis), from issue 10:

- never START or RECOVER while a writer (watch) or lock holder sits on a member, unclean,
  maintenance or conflicting node, or at an unknown address under the refuse policy;
- never RECOVER (nor start after recovering) without membership;
- a recovery is only ever aimed at a client on a fenced node, a node that left cleanly
  (holders without watch only), or an unknown address under the blocklist policy, and
  never at a host-wide address;
- start, migrate_to and the deep monitor agree on every image: a client one of them treats
  as a second writer, the others do too; an image that could not be inspected never lets
  start or migrate_to proceed;
- every recovered client is blocklisted before any lock break (the stateful fake).
"""

import logging
import types

from hypothesis import HealthCheck, given, settings, strategies as st

import fakes
from vmceph import facts as facts_mod
from vmceph import safety
from vmceph.ceph import CephSession
from vmceph.ocf import Deadline
from vmceph.safety import (CONFLICT, DNS_SOURCE, GONE, LEFT, LOCAL, MAINTENANCE, MEMBER,
                           UNCLEAN, UNKNOWN, Facts, ImageFacts, Locker, Owner, Watcher)

PLACES = ["local", "member", "unclean", "maint", "gone", "left", "conflict", "dns-gone",
          "unknown"]
IP = {p: "10.0.%d.1" % i for i, p in enumerate(PLACES)}
OWNER = {"local": Owner("n1", LOCAL), "member": Owner("n2", MEMBER),
         "unclean": Owner("n3", UNCLEAN), "maint": Owner("n4", MAINTENANCE),
         "gone": Owner("n5", GONE), "left": Owner("n6", LEFT),
         "conflict": Owner("n7", CONFLICT), "dns-gone": Owner("n8", GONE, DNS_SOURCE)}
ALIVE = {"member", "unclean", "maint", "conflict", "dns-gone"}   # never fenced off

client = st.tuples(st.sampled_from(PLACES), st.booleans(), st.booleans(),
                   st.booleans(), st.integers(1, 3))
# (place, watch?, lock?, host-wide address?, instance no.)


@st.composite
def image(draw, n):
    kind = draw(st.sampled_from(["ok"] * 6 + ["missing", "denied", "error"]))
    spec = "rbd/img%d" % n
    if kind == "missing":
        return ImageFacts(spec, exists=False), []
    if kind == "denied":
        return ImageFacts(spec, permission_denied=True), []
    if kind == "error":
        return ImageFacts(spec, error="timed out"), []
    clients = draw(st.lists(client, max_size=4, unique_by=lambda c: (c[0], c[4])))
    watchers, lockers = [], []
    for i, (place, watch, lock, hostwide, inst) in enumerate(clients):
        addr = "%s:0/0" % IP[place] if hostwide else "%s:0/%d" % (IP[place], 100 + inst)
        cookie = 1000 * n + 10 * inst + i
        if watch or not lock:
            watchers.append(Watcher(addr, 4000 + i, cookie))
        if lock and not lockers:
            lockers.append(Locker("client.%d" % (4000 + i), "auto %d" % cookie, addr))
    foreign = draw(st.sampled_from([None] * 8 + ["backup"]))
    img = ImageFacts(spec, lock_tag=(foreign or "internal") if lockers else None,
                     lockers=tuple(lockers), watchers=tuple(watchers))
    return img, clients


@st.composite
def fact_sets(draw):
    n = draw(st.integers(0, 3))
    imgs = [draw(image(i)) for i in range(n)]
    owners = {IP[p]: o for p, o in OWNER.items()}
    f = Facts(quorum_ok=draw(st.booleans()) or True, quorum_detail="q",
              images=tuple(i for i, _ in imgs), owners=owners, local_node="n1",
              domain_active_here=draw(st.booleans()),
              unknown_policy=draw(st.sampled_from([safety.UNKNOWN_REFUSE,
                                                   safety.UNKNOWN_BLOCKLIST])),
              membership_known=draw(st.booleans()))
    # Instances some node attested dead (its stop, deadclients.attest): by the address's
    # owner or by another node, whose word about an address it does not own is worthless.
    addrs = sorted({a for i, _ in imgs for a, _w in clients_of(i)})
    said = draw(st.lists(st.tuples(st.sampled_from(addrs), st.booleans()),
                         max_size=len(addrs))) if addrs else []
    f = f._replace(dead_attested=frozenset(
        (OWNER[place_of(a)].node if by_owner and place_of(a) in OWNER else "n9", a)
        for a, by_owner in said))
    return f


def attested_by_owner(f, addr):
    """The rule (safety table, (***)): a member, unclean or maintenance node's own word
    that this instance of its own is dead, with membership known. Not a conflicting
    address, not an owner known only from name resolution."""
    place = place_of(addr)
    return (place in ("member", "unclean", "maint") and f.membership_known
            and (OWNER[place].node, addr) in f.dead_attested and safety.instance_addr(addr))


def place_of(addr):
    ip = safety.ip_of(addr)
    return next(p for p, i in IP.items() if i == ip)


def clients_of(img):
    out = [(w.addr, True) for w in img.watchers]
    watched = {(w.addr, w.cookie) for w in img.watchers}
    out += [(lk.addr, False) for lk in img.lockers if (lk.addr, lk.watch_cookie) not in watched]
    return out


SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(fact_sets())
def test_never_proceeds_past_a_live_or_unprovable_client(f):
    v = safety.decide_start(f)
    if v.kind not in (safety.START, safety.RECOVER_THEN_START, safety.ALREADY_RUNNING):
        return
    for img in f.images:
        assert img.exists and not img.error and not img.permission_denied
        for addr, _watching in clients_of(img):
            place = place_of(addr)
            if attested_by_owner(f, addr):
                continue
            assert place not in ALIVE, (place, v)
            if place == "unknown":
                assert f.unknown_policy == safety.UNKNOWN_BLOCKLIST and f.membership_known
            if place == "left":
                assert not _watching
            if place != "local":
                assert safety.instance_addr(addr)


@SETTINGS
@given(fact_sets())
def test_recovery_only_on_proof(f):
    v = safety.decide_start(f)
    if not v.recoveries:
        return
    assert f.membership_known, "recovery without membership"
    assert v.kind == safety.RECOVER_THEN_START
    for r in v.recoveries:
        place = place_of(r.addr)
        if attested_by_owner(f, r.addr):
            continue
        assert place in ("gone", "left", "unknown"), place
        assert safety.instance_addr(r.addr)
        if place == "unknown":
            assert f.unknown_policy == safety.UNKNOWN_BLOCKLIST
        if place == "left":   # left cleanly: only a client with no watch anywhere
            assert not any(w.addr == r.addr for img in f.images for w in img.watchers)


@SETTINGS
@given(fact_sets())
def test_the_three_decisions_agree_per_image(f):
    f = f._replace(domain_active_here=True)
    for img in f.images:
        one = f._replace(images=(img,))
        view = safety.classify_image(one, img)
        start = safety.decide_start(one)
        migrate = safety.decide_migrate(one, "n2", "green")
        monitor = safety.check_sole_writer(one)
        if not view.inspected:
            assert not start.may_start and migrate.kind != safety.START
            continue
        second_writer = bool(view.blockers or view.foreign_locks)
        assert (start.kind == safety.REFUSE) == (second_writer or len(view.ours) > 1)
        assert (migrate.kind == safety.REFUSE) == (second_writer or len(view.ours) > 1)
        split = any("SPLIT BRAIN" in p for p in monitor.problems)
        assert split == second_writer
        # a client start would recover is one the monitor only warns about
        if start.recoveries and not second_writer:
            assert migrate.kind == safety.START


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["rbd/a", "rbd/b", "rbd/c"]),
                          st.sampled_from(["10.0.4.1", "10.0.4.2", "10.0.5.1"]),
                          st.booleans()), min_size=1, max_size=6))
def test_every_recovered_client_is_blocklisted_before_any_lock_break(entries):
    ceph = fakes.FakeCeph()
    try:
        for spec in ("rbd/a", "rbd/b", "rbd/c"):
            ceph.add_image(spec)
        recs = []
        for spec, ip, lock in entries:
            c = ceph.qemu_writes(spec, ip, lock=lock)
            cookie = ceph.image(spec).lockers[0][1] if lock else None
            recs.append(safety.Recovery(spec, c.addr, c.entity, "n5", "fenced", cookie))
        s = CephSession("", "vmceph", None, Deadline(20), None, rados_mod=ceph.rados,
                        rbd_mod=ceph.rbd)
        s.connect()
        ctx = types.SimpleNamespace(params=types.SimpleNamespace(blocklist_expire=600),
                                    log=logging.getLogger("prop"), deadline=Deadline(20))
        facts_mod.recover(ctx, s, recs)
        events = [e for e in ceph.timeline if e[0] == "ceph"]
        seen_break = False
        for e in events:
            if e[1] == "lock_break":
                seen_break = True
                assert ceph.is_blocklisted(e[3])
            if e[1] == "blocklist add":
                assert not seen_break, "a blocklist entry after a lock break"
        assert ceph.unsafe_breaks == []
        assert {r.addr for r in recs} <= set(ceph.blocklist)
    finally:
        ceph.close()
