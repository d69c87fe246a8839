"""What Ceph itself says about nodes fenced through it (fence_vmceph), for the start decision.

fence_vmceph fences a node with one host-wide blocklist entry ``IP:0/0`` per address of the
node (10-year expiry) and records what it added in the monitors' config-key store
(``vmceph/fence/<node>``, lib/vmceph/fence.py). The OSDs refuse every client instance on a
listed IP, so a client of a lost node whose address has that entry cannot write: the start
decision counts it GONE and its recovery is only the lock break (safety.apply_ceph_fences,
the pure rule; this module only reads).

Read here, with the start's own session and only when an image has a client on a lost or
gone node (a start without one pays nothing):
- ``osd blocklist ls``: the proof. A 'profile rbd' user may list it.
- the records: when and by whom. 'profile rbd' has no config-key cap, so a record that
  cannot be read only shortens the log line; it is never needed, and never enough.
"""

import json
import time

from vmceph import safety
from vmceph.ceph import CephError

RECORD_PREFIX = "vmceph/fence/"     # the same key fence.py writes


def parse_until(text):
    """'2036-11-29T19:02:33.123456+0000' ('osd blocklist ls', 16.2.15) -> epoch seconds;
    None if it does not parse (an entry of unknown expiry proves nothing)."""
    from datetime import datetime
    if not isinstance(text, str):
        return None
    t = text.strip().replace("Z", "+00:00")
    if len(t) > 5 and t[-5] in "+-" and t[-4:].isdigit():
        t = t[:-2] + ":" + t[-2:]             # +0000 -> +00:00 for fromisoformat
    try:
        stamp = datetime.fromisoformat(t)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return stamp.timestamp()


def parse_blocklist_until(out):
    """[(addr, until epoch or None)] of 'osd blocklist ls' in JSON: Pacific prints the
    entries and then the ranges as two arrays back to back (json.loads fails on it), older
    releases one array; the answer may come already decoded (a list)."""
    if isinstance(out, list):
        items = out
    else:
        text = (out or "").strip()
        items = []
        if text:
            obj, _end = json.JSONDecoder().raw_decode(text, 0)
            items = obj if isinstance(obj, list) else []
    return [(e["addr"], parse_until(e.get("until"))) for e in items
            if isinstance(e, dict) and e.get("addr")]


def _record(session, node):
    try:
        rec = session.mon("config-key get", key=RECORD_PREFIX + node)
    except CephError:   # no record (ENOENT), or no cap to read it: the entries decide
        return None
    if isinstance(rec, str):
        try:
            rec = json.loads(rec)
        except ValueError:
            return None
    return rec if isinstance(rec, dict) else None


def ceph_fences(session, imgs, owners, p, log):
    """``owners`` (IP -> safety.Owner) with the addresses fenced through Ceph made GONE.
    Any failure to read leaves them as they are: no proof, no change."""
    lost = {}
    for img in imgs:
        for c in (*img.watchers, *img.lockers):
            ip = safety.ip_of(c.addr)
            o = owners.get(ip)
            if o is not None and o.state in safety.CEPH_FENCEABLE and o.node:
                lost.setdefault(o.node, set()).add(ip)
    if not lost:
        return owners
    blocked = _host_entries(session, log and log.warning,
                            "cannot read the OSD blocklist (no node counts as fenced "
                            "through Ceph): %s")
    if blocked is None:
        return owners
    if not any(ip in blocked for ips in lost.values() for ip in ips):
        return owners
    records = {n: r for n, r in ((n, _record(session, n)) for n in sorted(lost)) if r}
    expire = float(getattr(p, "blocklist_expire", 3600) or 3600)
    fenced = safety.apply_ceph_fences(owners, blocked, time.time(), expire, records)
    if log:
        for ip, o in sorted(fenced.items()):
            if o.host_blocklisted and not owners[ip].host_blocklisted:
                log.info("address %s of node %s (%s for Pacemaker) counts as fenced: %s", ip,
                         o.node, owners[ip].state, o.note)
    return fenced


def _host_entries(session, say, why):
    """safety.host_blocklisted() of the OSD blocklist, or None (said with ``why``) when it
    cannot be read: no proof either way."""
    try:
        return safety.host_blocklisted(parse_blocklist_until(session.mon("osd blocklist ls")))
    except (CephError, ValueError) as e:
        if say:
            say(why, e)
        return None


def fenced_here(session, addrs, log=None):
    """Why this node's own Ceph clients are cut off, or None: one of its addresses has a
    host-wide entry in the OSD blocklist (fence_vmceph fenced the node, nobody unfenced it
    since). CephHealth's other checks cannot see it: the monitors do not check the
    blocklist, so quorum and health answer as usual on a fenced node, while every OSD
    operation of its clients (QEMU's librbd) fails. Not being allowed to list the blocklist
    tells nothing: None, logged."""
    ips = {safety.ip_of(a) for a in addrs or ()} - {""}
    if not ips:
        return None
    blocked = _host_entries(session, log and log.info,
                            "cannot read the OSD blocklist to tell whether this node is "
                            "fenced through Ceph: %s")
    if blocked is None:
        return None
    hit = sorted(ips & set(blocked))
    if not hit:
        return None
    return ("this node is fenced through Ceph (%s in the OSD blocklist): its clients, QEMU's "
            "librbd included, cannot do I/O; once it is a member of the quorate partition "
            "again, Pacemaker unfences it if fence_vmceph has provides=unfencing (asked by "
            "CephHealth), else run stonith_admin --unfence NODE (fence_vmceph 'on')"
            % ", ".join(safety.host_entry(ip) for ip in hit))
