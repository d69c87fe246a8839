"""The decisions (safety.py): the wording administrators see, and named cases.

The decision table itself is data in test_decision_table.py (one test per row, written from
the start table and issue 10), and the invariants over random fact sets are in
test_safety_properties.py.
"""

import pytest

from vmceph import safety
from vmceph.safety import (GONE, LOCAL, MEMBER, UNCLEAN, UNKNOWN, Facts, ImageFacts, Locker,
                           Owner, Watcher, decide_start, decide_migrate, check_sole_writer)

NODE_IP = {"local": "10.0.0.1", "member": "10.0.0.2", "unclean": "10.0.0.3",
           "gone": "10.0.0.4", "unknown": "192.0.2.99"}
OWNERS = {
    "10.0.0.1": Owner("node1", LOCAL, "own session"),
    "10.0.0.2": Owner("node2", MEMBER, "node_addresses"),
    "10.0.0.3": Owner("node3", UNCLEAN, "node_addresses"),
    "10.0.0.4": Owner("node4", GONE, "node_addresses"),
    # 192.0.2.99 deliberately unmapped
}

# Writers a test can place on an image: (label, node kind, client id)
WRITERS = [("local-a", "local", 4101), ("local-b", "local", 4102), ("member", "member", 4200),
           ("unclean", "unclean", 4300), ("gone", "gone", 4400), ("unknown", "unknown", 4500)]


def watcher(kind, cid):
    return Watcher("%s:0/%d" % (NODE_IP[kind], cid * 7), cid, cid * 1000)


def lock_of(w):
    return Locker(w.entity, "auto %d" % w.cookie, w.addr)


DEAD_HOLDER = Locker("client.4999", "auto 4999000", "10.0.0.2:0/999")  # member node, no watch
FENCED_HOLDER = Locker("client.4998", "auto 4998000", "10.0.0.4:0/998")  # fenced node, no watch


def facts(images, active=False, quorum=True, policy=safety.UNKNOWN_REFUSE, known=True):
    return Facts(quorum_ok=quorum, quorum_detail="quorum a,b,c" if quorum else "no quorum",
                 images=tuple(images), owners=OWNERS, local_node="node1",
                 domain_active_here=active, unknown_policy=policy, membership_known=known)


def build_image(writers, lock):
    ws = {label: watcher(kind, cid) for label, kind, cid in WRITERS if label in writers}
    if lock == "none":
        lockers = ()
    elif lock == "dead":
        lockers = (DEAD_HOLDER,)
    else:
        lockers = (lock_of(ws[lock[5:]]),)
    return ImageFacts("rbd/vm1", lockers=lockers, watchers=tuple(ws.values()),
                      lock_tag="internal" if lockers else None), ws


@pytest.mark.parametrize("active", [False, True])
def test_no_quorum_beats_everything(active):
    img, _ = build_image(("member", "gone"), "dead")
    v = decide_start(facts([img], active=active, quorum=False))
    assert v.kind == safety.UNAVAILABLE
    assert not v.recoveries and not v.may_start
    assert "no quorum" in v.reasons[0]


def test_missing_image_is_a_configuration_error_naming_it():
    v = decide_start(facts([ImageFacts("rbd/vm1"), ImageFacts("rbd/ns/gone", exists=False)]))
    assert v.kind == safety.CONFIG
    assert "rbd/ns/gone" in v.reasons[0]


def test_permission_denied_names_image_and_caps():
    v = decide_start(facts([ImageFacts("rbd/vm1", permission_denied=True)]))
    assert v.kind == safety.PERM
    assert "rbd/vm1" in v.reasons[0] and "profile rbd" in v.reasons[0]


def test_inspection_error_is_unavailable():
    v = decide_start(facts([ImageFacts("rbd/vm1", error="inspect rbd/vm1 did not answer")]))
    assert v.kind == safety.UNAVAILABLE
    assert "rbd/vm1" in v.reasons[0]


def test_refusal_names_image_node_client_and_address():
    img, ws = build_image(("member",), "with:member")
    v = decide_start(facts([img]))
    assert v.kind == safety.REFUSE
    text = v.summary()
    for part in ("rbd/vm1", "node2", "client.4200", ws["member"].addr, "live cluster member"):
        assert part in text


def test_unclean_node_is_refused_until_fenced():
    img, _ = build_image(("unclean",), "with:unclean")
    v = decide_start(facts([img]))
    assert v.kind == safety.REFUSE and "not yet fenced" in v.summary()
    assert not v.recoveries


def test_local_writer_without_our_domain_is_refused():
    img, _ = build_image(("local-a",), "with:local-a")
    v = decide_start(facts([img], active=False))
    assert v.kind == safety.REFUSE and "not this domain" in v.summary()


def test_two_local_writers_with_our_domain_running_is_refused():
    img, _ = build_image(("local-a", "local-b"), "with:local-a")
    v = decide_start(facts([img], active=True))
    assert v.kind == safety.REFUSE and "2 writers on this node" in v.summary()


def test_our_domain_as_only_writer_is_idempotent_success():
    img, _ = build_image(("local-a",), "with:local-a")
    v = decide_start(facts([img], active=True))
    assert v.kind == safety.ALREADY_RUNNING and v.may_start and not v.recoveries


def test_fenced_holder_is_blocklisted_and_its_lock_broken():
    img, ws = build_image(("gone",), "with:gone")
    v = decide_start(facts([img]))
    assert v.kind == safety.RECOVER_THEN_START
    (r,) = v.recoveries
    assert r.addr == ws["gone"].addr and r.entity == "client.4400" and r.node == "node4"
    assert r.cookie == "auto %d" % ws["gone"].cookie


def test_holder_with_watch_at_same_address_but_other_cookie_is_dead():
    # The same client address re-registered a watch with another cookie: the lock's watch
    # (cookie 1) is gone, so the holder is dead even though the address still watches.
    w = Watcher("10.0.0.4:0/5", 4400, 2)
    lk = Locker("client.4400", "auto 1", "10.0.0.4:0/5")
    v = decide_start(facts([ImageFacts("rbd/vm1", lockers=(lk,), watchers=(w,))]))
    assert v.kind == safety.RECOVER_THEN_START
    # the address is blocklisted (once: recover() dedupes on the address) and the stale
    # lock, cookie 1, is broken: the dedupe must not drop it for the watcher of cookie 2
    assert {(r.addr, r.cookie) for r in v.recoveries} == {("10.0.0.4:0/5", "auto 1"),
                                                          ("10.0.0.4:0/5", None)}


def test_unknown_writer_refused_by_default_blocklisted_by_policy():
    img, _ = build_image(("unknown",), "none")
    assert decide_start(facts([img])).kind == safety.REFUSE
    v = decide_start(facts([img], policy=safety.UNKNOWN_BLOCKLIST))
    assert v.kind == safety.RECOVER_THEN_START
    assert "node_addresses" in decide_start(facts([img])).summary()


def test_several_images_any_refusal_refuses_all():
    ok, _ = build_image((), "none")
    bad, _ = build_image(("member",), "with:member")
    gone, _ = build_image(("gone",), "with:gone")
    v = decide_start(facts([ok, gone, bad]))
    assert v.kind == safety.REFUSE and not v.recoveries


def test_several_images_recover_each():
    a, _ = build_image(("gone",), "with:gone")
    b = ImageFacts("rbd/vm1-data", lockers=(FENCED_HOLDER,))
    v = decide_start(facts([a, b]))
    assert v.kind == safety.RECOVER_THEN_START
    assert {r.image for r in v.recoveries} == {"rbd/vm1", "rbd/vm1-data"}


def test_no_guarded_disks_starts():
    v = decide_start(facts([]))
    assert v.kind == safety.START


@pytest.mark.parametrize("addr,ip", [
    ("10.252.0.1:0/3154213287", "10.252.0.1"),
    ("v2:10.252.0.1:6800/123", "10.252.0.1"),
    ("[v2:10.0.0.5:3300/0,v1:10.0.0.5:6789/0]", "10.0.0.5"),
    ("[::1]:0/5", "::1"),
    ("10.0.0.9", "10.0.0.9"),
])
def test_ip_of(addr, ip):
    assert safety.ip_of(addr) == ip


# ------------------------------------------------------------------ migrate and deep monitor

def test_migrate_refuses_red_target():
    img, _ = build_image(("local-a",), "with:local-a")
    v = decide_migrate(facts([img], active=True), "node2", "red")
    assert v.kind == safety.REFUSE and "node2" in v.summary() and "red" in v.summary()


def test_migrate_refuses_second_writer_and_allows_sole_local():
    img, _ = build_image(("local-a", "member"), "with:local-a")
    assert decide_migrate(facts([img], active=True), "node2", "green").kind == safety.REFUSE
    img, _ = build_image(("local-a",), "with:local-a")
    assert decide_migrate(facts([img], active=True), "node2", "green").kind == safety.START
    assert decide_migrate(facts([img], active=True), "node2", None).kind == safety.START
    assert decide_migrate(facts([img], active=True, quorum=False), "node2",
                          "green").kind == safety.UNAVAILABLE


def test_sole_writer_check():
    img, _ = build_image(("local-a",), "with:local-a")
    assert check_sole_writer(facts([img], active=True)).ok
    img, _ = build_image(("local-a", "member"), "with:local-a")
    r = check_sole_writer(facts([img], active=True))
    assert not r.ok and "SPLIT BRAIN" in r.problems[0] and "node2" in r.problems[0]
    img, _ = build_image((), "none")
    r = check_sole_writer(facts([img], active=True))
    assert not r.ok and "no writer on this node" in r.problems[0]


def test_left_node_holder_that_still_watches_another_image_is_alive():
    """'Left cleanly and has no live watch' is about the client, not one image: a client
    instance that watches any image of the domain is alive, whatever it does with this one."""
    left = Owner("node5", safety.LEFT, "node_addresses")
    owners = dict(OWNERS, **{"10.0.0.5": left})
    lk = Locker("client.4600", "auto 1", "10.0.0.5:0/77")
    a = ImageFacts("rbd/vm1", lock_tag="internal", lockers=(lk,))
    f = Facts(True, "q", (a,), owners, "node1", False, membership_known=True)
    assert decide_start(f).kind == safety.RECOVER_THEN_START
    b = ImageFacts("rbd/vm1-data", watchers=(Watcher("10.0.0.5:0/77", 4600, 2),))
    v = decide_start(f._replace(images=(a, b)))
    assert v.kind == safety.REFUSE and "still watches another image" in v.summary()
