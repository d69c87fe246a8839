"""Is a lost Ceph monitor quorum this node's own problem, or everybody's?

CephHealth makes a node red when it cannot reach a monitor quorum, so that migrate-on-red
moves its VMs to nodes that can (a storage-only cut of that node). When the monitors have
lost quorum for everybody, though, every node says red at once, and migrate-on-red stops
every VM in the cluster: seen in the 200-fault soak of 2026-12-02 (seed 1203, fault 5,
two of three monitors stopped for 30 s, quorum back after ~70 s). The QEMUs would have
gone on: I/O on images already open keeps working without a monitor quorum (CEPH-FACTS;
the soak's write oracle acknowledged writes through the earlier, shorter quorum losses),
and none of the stopped VMs can start anywhere until the quorum is back. Red there turns a
control-plane outage into a full one.

From its own view a node cannot tell the two apart, so it asks its peers, through attrd
(corosync: independent of Ceph):

- A node that cannot reach a quorum publishes a token for this outage (``lost``: written
  once, kept while the outage lasts, deleted when it reaches a quorum again).
- A node that reaches a quorum acknowledges the tokens it read *before* it asked Ceph
  (``seen``: 'node=token ...'): "I reached a quorum after you had lost yours".
- A node without a quorum is red once some peer's ``seen`` carries its current token;
  until then it is yellow: the outage is cluster-wide, or not known to be this node's yet.

Causal, no clocks compared: an acknowledgement can only carry a token its writer read, and
a token is new for each outage, so an old acknowledgement vouches for nothing. The price:
a node cut off alone turns red one or two monitor intervals later than before (its token
must reach a peer's monitor and the acknowledgement come back). A node with no peer
running CephHealth stays yellow.

The decision is ``step``, a pure function; the agent reads and writes the attributes.
"""

import os
import time

PREFIX = "vmceph-quorum-"


def names(health_attribute):
    """(lost, seen) attribute names for a health attribute: one pair per CephHealth
    clone (two clones for two Ceph clusters do not share tokens)."""
    base = health_attribute.lstrip("#")
    return PREFIX + "lost-" + base, PREFIX + "seen-" + base


def new_token(now=None):
    """Unique per outage and node: the time (for a person reading it) and randomness."""
    return "%d-%s" % (int(time.time() if now is None else now), os.urandom(4).hex())


def parse_seen(text):
    """'node1=tok node2=tok' -> {node: token}; malformed entries are ignored (a peer's
    attribute is input, never a reason to fail)."""
    out = {}
    for item in (text or "").split():
        node, sep, token = item.partition("=")
        if sep and node and token:
            out[node] = token
    return out


def format_seen(acks):
    return " ".join("%s=%s" % (n, t) for n, t in sorted(acks.items()))


def step(me, reached, lost, seen, token=None):
    """One monitor's part of the protocol. Pure.

    me: this node's name. reached: this monitor reached a monitor quorum. lost: {node:
    token} of every node's ``lost`` attribute and seen: {node: value of its ``seen``
    attribute}, both as read before Ceph was asked (an acknowledgement written while this
    node's ask was under way may come from a quorum that returned during it). token: a
    fresh token, used when this node had none.

    Returns (vouchers, writes): vouchers is None when reached, else the sorted peers whose
    ``seen`` acknowledges this node's current token (non-empty: red; empty: yellow);
    writes is [(which, value or None to delete)] with which in ("lost", "seen")."""
    mine = lost.get(me)
    if reached:
        writes = [("lost", None)] if mine else []
        acks = {n: t for n, t in lost.items() if n != me and t}
        if acks:
            wanted = format_seen(acks)
            if (seen.get(me) or "") != wanted:
                writes.append(("seen", wanted))
        return None, writes
    writes = []
    if not mine:
        mine = token or new_token()
        writes.append(("lost", mine))
    vouchers = sorted(n for n, value in seen.items()
                      if n != me and parse_seen(value).get(me) == mine)
    return vouchers, writes
