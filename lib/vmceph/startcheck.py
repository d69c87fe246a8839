"""The second look of a start: after the domain was created paused, is its QEMU the only
writer of every guarded image?

The first look (safety.decide_start) sees only the writers that are already there. Two
starters in the same window (a retried start on another node, a cloned resource, a
``virsh create`` outside the cluster) both see no writer and both create their domain. So
the agent creates the domain *paused*: QEMU opens its RBD images, and thereby becomes a
watcher of each (lab: a ``virsh create --paused`` QEMU is a watcher as soon as createXML
returns; it takes the exclusive lock only at its first write), yet no vCPU runs, so the
guest has written nothing. Then every image is inspected again, and the rule is:

    this domain's QEMU must be the only writer: exactly one watcher per image that is on
    this node and was not there before the create; every other watcher is another writer,
    except the clients this start has just fenced off (blocklisted; their watches linger
    until the OSDs time them out).

Why this is enough for two racing starters: each one's watch exists before its own check
(createXML returns after QEMU opened the image). If A's check does not see B's watch, B's
watch came after A's check, hence after A's watch; so B's check sees A's and B backs off.
Both may see each other and both back off; both resuming cannot happen. A start that backed
off looks again, whole (first look, paused create, second look), after a random pause
(``contended``): the lab's racing starters both backed off in 20-40 % of rounds, and with
Pacemaker's start-failure-is-fatal that bans the VM from both nodes until a cleanup.

Pure: facts in, judgement out. The agent destroys the paused domain when ``ok`` is False.
"""

from typing import NamedTuple, Tuple

from vmceph import safety


class AfterCreate(NamedTuple):
    ok: bool
    problems: Tuple[str, ...] = ()
    ours: Tuple[Tuple[str, str], ...] = ()      # (image, watcher address) of our QEMU
    # another writer appeared while ours was created (a racing starter): worth one more
    # look after a random pause, unlike a failed inspection
    contended: bool = False

    def summary(self):
        return "; ".join(self.problems) if self.problems else "this domain's QEMU is the " \
                                                              "only writer"


def _node_of(owners, addr):
    return owners.get(safety.ip_of(addr), safety.Owner(None, safety.UNKNOWN))


def describe_writer(watcher, owner):
    """'client.4242 at 10.0.0.2:0/123 on node2 (a live cluster member)'"""
    what = {safety.LOCAL: "this node", safety.MEMBER: "a live cluster member",
            safety.UNCLEAN: "lost, not yet fenced", safety.GONE: "fenced or not a member",
            safety.UNKNOWN: "an address no cluster node is known to use"}.get(owner.state,
                                                                                owner.state)
    return "%s at %s on %s (%s)" % (watcher.entity, watcher.addr,
                                   owner.node or "an unknown node", what)


def judge_after_create(before, after, owners, excepted=frozenset(), kernel_mapped=frozenset()):
    """AfterCreate for the images ``after`` (ImageFacts inspected once the paused domain
    exists), given ``before`` (ImageFacts of the same images from the first look), the
    owners map (IP -> safety.Owner) and the addresses ``excepted`` (clients this start
    blocklisted).

    ``kernel_mapped``: images the domain reaches through this node's krbd mapping. QEMU
    opens the block device, not the image: no new Ceph client appears, and the kernel
    client (left out of both inspections by the caller, disks.without_own_krbd) is the
    domain's writer. Any other watcher of such an image is another writer."""
    seen = {img.spec: {(w.addr, w.cookie) for w in img.watchers} for img in before}
    problems, ours_all = [], []
    contended = False
    for img in after:
        if not img.exists or img.permission_denied or img.error:
            why = ("it no longer exists" if not img.exists else "permission denied"
                   if img.permission_denied else img.error)
            problems.append("cannot inspect RBD image %s again after creating the domain "
                            "paused (%s): its writers cannot be verified" % (img.spec, why))
            continue
        ours, others = [], []
        kernel = img.spec in kernel_mapped
        for w in img.watchers:
            if w.addr in excepted:
                continue
            owner = _node_of(owners, w.addr)
            if not kernel and owner.state == safety.LOCAL and \
                    (w.addr, w.cookie) not in seen.get(img.spec, ()):
                ours.append(w)
            else:
                others.append((w, owner))
        if others:
            contended = True
            problems.append("image %s is also open read-write by %s: another writer appeared "
                            "while this domain was being started (a start racing there, or a "
                            "process outside the cluster); see where the domain runs before "
                            "starting it again" % (img.spec, ", ".join(
                                describe_writer(w, o) for w, o in others)))
        elif kernel:
            ours_all.append((img.spec, "this node's krbd mapping"))
        elif not ours:
            problems.append("this domain's QEMU does not show as a writer of image %s after "
                            "the paused create: its writers cannot be verified" % img.spec)
        elif len(ours) > 1:
            contended = True
            problems.append("image %s has %d new writers on this node (%s): another process "
                            "here opened it at the same time" % (img.spec, len(ours), ", ".join(
                                "%s at %s" % (w.entity, w.addr) for w in ours)))
        else:
            ours_all.append((img.spec, ours[0].addr))
    return AfterCreate(not problems, tuple(problems), tuple(ours_all), contended)
