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
"""

import time

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


def encode(pid, start_time):
    return "pid=%d\nstart=%d\n" % (pid, start_time)


def decode(text):
    """(pid, start time) or None when the text is not a mark."""
    fields = {}
    for line in (text or "").split("\n"):
        key, _, value = line.partition("=")
        if key in ("pid", "start"):
            try:
                fields[key] = int(value)
            except ValueError:
                return None
    if fields.get("pid", 0) <= 0 or "start" not in fields:
        return None
    return fields["pid"], fields["start"]


def mark(ctx):
    """Written by the start right before it asks libvirt to create the domain; True if
    written. A start that cannot write it goes on (the mark only ever makes a stop wait)."""
    import os
    from vmceph import deadclients, ocf
    start = deadclients.process_start_time(os.getpid())
    if start is None:
        return False
    return ocf.write_state(ctx, state_name(ctx.instance), encode(os.getpid(), start)) \
        is not None


def clear(ctx):
    from vmceph import ocf
    ocf.remove_state(ctx, state_name(ctx.instance))


def orphaned(mark_, start_time_of=None):
    """A note saying which start died, if ``mark_`` ((pid, start time) or None) was left by
    a process that no longer runs; None otherwise (no mark, or its start still runs)."""
    if mark_ is None:
        return None
    from vmceph import deadclients
    pid, start = mark_
    now = (start_time_of or deadclients.process_start_time)(pid)
    if now is not None and now == start:
        return None
    return "a start of this resource (pid %d) died while libvirt was creating the domain" % pid


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
