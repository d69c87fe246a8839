"""A start that died while libvirt was creating its domain, and the stop that must wait for it.

The start creates the domain paused (virDomainCreateXML) and only then checks its writers.
If the agent dies during that call (SIGKILLed by pacemaker-execd at its timeout, the OOM
killer, the chaos soak's "agent-kill-start"), libvirtd does not: it finishes the create for
a client that is gone. Pacemaker, told the start failed, runs the stop at once on the same
node, and that stop can come before the domain is there:

- libvirt lists a domain being created from the moment it accepts the call, as "shut off"
  until QEMU is launched (a transient domain is shut off only while it starts: one that
  stops is gone from the list), and a stop reading "shut off" says stopped;
- or the stop asks before libvirtd has even taken the call, and finds no domain.

Either way the stop succeeds, and seconds later a paused QEMU of the VM exists on this node
that Pacemaker believes stopped: it holds a watch on every image of the VM, and every start
of the VM elsewhere rightly refuses it ("open read-write ... on a live cluster member").
Seen in the 200-fault soak (docs/reliability.md, seed 1203, fault 21): the VM was refused
on every node and needed an operator.

The same death a little later, between the create and the resume, leaves a paused domain
whose vCPUs never ran; the stop finds it, but a paused guest does not answer a shutdown
request, and the stop would wait out two thirds of its timeout before destroying it.

So the start leaves a mark in the state directory just before the create and removes it
once the domain is resumed, or once what it created is destroyed, or at once if libvirt
refused the create (a create that timed out keeps it: libvirt may still finish it). A mark
left behind by a process that no longer runs (same pid, same kernel start time: a pid is
reused, a start time with it is not) means a create may still be running in libvirt: the
stop waits for it to settle (``settle``), then destroys a paused domain at once (it never
ran), and removes the mark when it has stopped the resource.

A QEMU destroyed while libvirt is still launching it can leave its watch on the images
behind (lab, tests/integration/test_recovery_proof.py: the watch outlived the destroy;
the OSDs drop it after osd_client_watch_timeout, 30 s), and meanwhile every start of the
VM elsewhere refuses it as a live member's writer: what the soak's fault 21 showed ("its
watch lingered, and the next starts on all three nodes refused"). The start died before
it could record which client was its QEMU's (vmceph.deadclients), so the mark carries
the watchers its first look saw, and the stop, once no QEMU of the domain runs here,
releases the one new instance of this node on each image (``appeared``, ``release``):
the attribution the start itself makes after its create (startcheck).
"""

import time
from typing import NamedTuple

SUFFIX = ".creating"

# How long a stop that found an orphaned mark waits for a domain that is not there (yet):
# libvirtd takes the call within milliseconds of the agent sending it, so a domain that has
# not appeared after this will not. A domain that is listed (shut off, being launched) is
# waited for until it is running or gone, within SETTLE_CAP_S and the stop's share.
APPEAR_GRACE_S = 3.0
SETTLE_CAP_S = 60.0
POLL_S = 0.2


def state_name(instance):
    from vmceph import ocf
    return ocf.state_file_name("vmceph-RBDVirtualDomain-", instance, SUFFIX)


class Mark(NamedTuple):
    pid: int
    start: int                 # the process's start time (deadclients.process_start_time)
    before: dict = {}          # image spec -> frozenset of the watchers' addresses seen by
    #                            the start's first look, before the create


def encode(pid, start_time, before=None):
    lines = ["pid=%d" % pid, "start=%d" % start_time]
    for spec, addrs in sorted((before or {}).items()):
        lines.append("image=%s" % spec)
        lines += ["before=%s %s" % (spec, a) for a in sorted(addrs)]
    return "\n".join(lines) + "\n"


def decode(text):
    """A Mark, or None when the text is not one."""
    fields, before = {}, {}
    for line in (text or "").split("\n"):
        key, _, value = line.partition("=")
        if key in ("pid", "start"):
            try:
                fields[key] = int(value)
            except ValueError:
                return None
        elif key == "image" and value:
            before.setdefault(value, set())
        elif key == "before":
            spec, _, addr = value.partition(" ")
            if not spec or not addr:
                return None
            before.setdefault(spec, set()).add(addr)
    if fields.get("pid", 0) <= 0 or "start" not in fields:
        return None
    return Mark(fields["pid"], fields["start"],
                {k: frozenset(v) for k, v in before.items()})


def mark(ctx, images=()):
    """Written by the start right before it asks libvirt to create the domain, with the
    watchers its first look saw on each image its QEMU opens through librbd
    (``images``: safety.ImageFacts); True if written. A start that cannot write it goes
    on (the mark only ever makes a stop wait, or release what it can prove)."""
    import os
    from vmceph import deadclients, ocf
    start = deadclients.process_start_time(os.getpid())
    if start is None:
        return False
    before = {i.spec: frozenset(w.addr for w in i.watchers) for i in images}
    return ocf.write_state(ctx, state_name(ctx.instance),
                           encode(os.getpid(), start, before)) is not None


def appeared(mark_, images, local_ips):
    """The client instances the dead start's QEMU left: for each image of the mark
    (``images``: safety.ImageFacts inspected after that QEMU is gone), the watchers at
    one of this node's addresses that the start's first look had not seen, by the rule
    the start itself applies after its create (startcheck.judge_after_create): exactly
    one such instance is the QEMU's; none, nothing to do; more than one, another process
    here opened the image too, and nobody can say which is which: left alone. Pure.

    Returns (recoveries [safety.Recovery], doubts [sentence])."""
    from vmceph.safety import Recovery, instance_addr, ip_of
    recs, doubts = [], []
    for img in images:
        if img.spec not in mark_.before or not img.exists or img.error or \
                img.permission_denied:
            continue
        new = [w for w in img.watchers if ip_of(w.addr) in local_ips
               and instance_addr(w.addr) and w.addr not in mark_.before[img.spec]]
        if len(new) > 1:
            doubts.append("image %s has %d watchers on this node that appeared since the "
                          "dead start's first look (%s): not released"
                          % (img.spec, len(new), ", ".join(w.addr for w in new)))
            continue
        for w in new:
            # only librbd's own lock ("auto <watch cookie>"), as deadclients.leftovers
            lock = next((lk.cookie for lk in img.lockers if lk.addr == w.addr
                         and lk.watch_cookie is not None), None) \
                if img.lock_tag in (None, "internal") else None
            recs.append(Recovery(img.spec, w.addr, w.entity, None,
                                 "the QEMU a start killed during its create left here, "
                                 "destroyed since", lock))
    return recs, doubts


def clear(ctx):
    from vmceph import ocf
    ocf.remove_state(ctx, state_name(ctx.instance))


def orphaned(mark_, start_time_of=None):
    """A note saying which start died, if ``mark_`` ((pid, start time) or None) was left by
    a process that no longer runs; None otherwise (no mark, or its start still runs)."""
    if mark_ is None:
        return None
    from vmceph import deadclients
    pid, start = mark_.pid, mark_.start
    now = (start_time_of or deadclients.process_start_time)(pid)
    if now is not None and now == start:
        return None
    return ("a start of this resource (pid %d) died between creating the domain and resuming "
            "it" % pid)


def read(ctx):
    from vmceph import ocf
    return decode(ocf.read_state(ctx, state_name(ctx.instance)))


# What a stop learns from one look at the domain, for ``settle``.
ABSENT, STARTING, SETTLED = "absent", "starting", "settled"


def settle(look, budget_s, clock=time.monotonic, sleep=time.sleep):
    """Wait until a create libvirt may still be running for a dead start has an outcome.
    ``look()`` answers ABSENT (no such domain), STARTING (listed, shut off and transient:
    libvirt is launching it) or SETTLED (running, paused, or persistent and shut off).
    Returns (last answer, seconds waited). Pure but for the two injected clocks.

    ABSENT is waited for APPEAR_GRACE_S at most (after which the create is taken to have
    failed or never reached libvirt), STARTING until it changes, both within ``budget_s``."""
    t0 = clock()
    while True:
        seen = look()
        waited = clock() - t0
        if seen == SETTLED:
            return seen, waited
        limit = APPEAR_GRACE_S if seen == ABSENT else budget_s
        if waited + POLL_S > min(limit, budget_s):
            return seen, waited
        sleep(POLL_S)


def release(ctx, params, share, mark_):
    """The stop's side task once the domain of a dead start is gone from this node: a QEMU
    destroyed while libvirt was still launching it leaves its watch behind (lab,
    tests/integration/test_recovery_proof.py: the watch outlived the destroy; the OSDs drop
    it only after osd_client_watch_timeout, 30 s), and until then every start of the VM on
    another node refuses it as a live member's writer. The start never recorded that
    client (it died first), so this blocklists the instances ``appeared`` proves to be its
    QEMU's and breaks any lock they hold. ``params``: get(name) of ceph_conf, ceph_user,
    ceph_keyring, blocklist_expire. Never raises for Ceph; True when done, False when
    Ceph could not be asked, None when there was nothing to look at."""
    if mark_ is None or not mark_.before:
        return None
    from vmceph.ceph import CephError, CephSession
    from vmceph.fencing import Fencer
    log = ctx.log
    try:
        with CephSession(params.get("ceph_conf"), params.get("ceph_user"),
                         params.get("ceph_keyring"), share, log) as session:
            ips = set(session.client_addrs())
            recs, doubts = appeared(mark_, session.inspect_all(sorted(mark_.before)), ips)
            recs = [r._replace(node=ctx.node_name or None) for r in recs]
            if recs:
                Fencer(session, share, log, params.get("blocklist_expire")).recover(recs)
    except (CephError, ValueError) as e:
        log.warning("cannot release what the QEMU of the dead start left on %s (%s): a "
                    "start on another node refuses until its watch times out (30 s)",
                    ", ".join(sorted(mark_.before)), e)
        return False
    for d in doubts:
        log.warning("%s", d)
    if recs:
        log.warning("released %d client instance(s) the dead start's QEMU left on %s",
                    len(recs), ", ".join(sorted({r.image for r in recs})))
    return True
