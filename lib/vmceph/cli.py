"""``vmceph``: the administrator's view of what the agent sees and would decide.

    vmceph disks CONFIG [--json]        the RBD disks of a domain XML, guarded or not
    vmceph check CONFIG [options]       quorum, holders, watchers, their nodes, and the
                                        decision 'start' would make, with its reasons
    vmceph check --image POOL/IMAGE     the same for one image, without a domain XML

``check`` uses the agent's own code (facts.gather_with + safety.decide_start): what it
prints is what the agent would do on this node now. Exit status of check: 0 start
allowed, 1 refused or Ceph unusable, 2 bad input.
"""

import argparse
import json
import sys

from vmceph import __version__

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _parser():
    ap = argparse.ArgumentParser(
        prog="vmceph",
        description="Who holds the RBD images of a VM, and what ocf:vmceph:RBDVirtualDomain "
                    "would decide on this node.")
    ap.add_argument("--version", action="version", version="vmceph " + __version__)
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("disks", help="list the RBD disks of a domain XML")
    d.add_argument("config", help="libvirt domain XML file")
    d.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser("check", help="show holders/watchers and the start decision")
    c.add_argument("config", nargs="?", help="libvirt domain XML file")
    c.add_argument("--image", action="append", default=[], metavar="POOL/[NS/]IMAGE",
                   help="check this image (repeatable) instead of a domain's disks")
    c.add_argument("--ceph-conf", default="/etc/ceph/ceph.conf")
    c.add_argument("--ceph-user", default="", help="client id, without 'client.'")
    c.add_argument("--ceph-keyring", default="")
    c.add_argument("--node-addresses", default="", metavar="'NODE=IP[,IP] ...'")
    c.add_argument("--membership", default="", metavar="'NODE=member|fenced|unclean ...'",
                   help="outside a Pacemaker cluster: the state of each node")
    c.add_argument("--node", default=None, help="this node's name (default: as Pacemaker "
                                                 "or the host name says)")
    c.add_argument("--unknown-client-policy", default="refuse", choices=("refuse", "blocklist"))
    c.add_argument("--hypervisor", default="qemu:///system",
                   help="libvirt URI, to tell whether the domain runs here")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "disks":
            return cmd_disks(args)
        return cmd_check(args)
    except UsageError as e:
        sys.stderr.write("vmceph: %s\n" % e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


class UsageError(Exception):
    pass


def _load(path):
    from vmceph.domxml import DomainXMLError, load_domain
    try:
        return load_domain(path)
    except DomainXMLError as e:
        raise UsageError(str(e)) from None


def cmd_disks(args):
    dom = _load(args.config)
    if args.json:
        out = [{k: d.as_json()[k] for k in ("target", "pool", "namespace", "image", "snapshot",
                                            "guarded", "readonly", "shareable", "device",
                                            "spec", "hosts", "auth_user")}
               for d in dom.rbd_disks]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    print("domain %s (uuid %s): %d RBD disk(s)%s" % (
        dom.name, dom.uuid or "-", len(dom.rbd_disks),
        ", other disks: %s" % ", ".join(dom.other_disks) if dom.other_disks else ""))
    for d in dom.rbd_disks:
        why = []
        if d.readonly:
            why.append("read-only")
        if d.shareable:
            why.append("shareable")
        if d.snapshot:
            why.append("snapshot %s" % d.snapshot)
        if d.device not in ("disk", "lun"):
            why.append(d.device)
        print("  %-6s %-40s %s" % (d.target or "?", d.spec,
                                   "guarded" if d.guarded else "not guarded (%s)" % ", ".join(why)))
    return EXIT_OK


class _Args:
    """Parameters for facts.gather_with, from the command line (the agent's names)."""

    def __init__(self, args):
        self.ceph_conf = args.ceph_conf
        self.ceph_user = args.ceph_user
        self.ceph_keyring = args.ceph_keyring
        self.node_addresses = args.node_addresses
        self.membership = args.membership
        self.unknown_client_policy = args.unknown_client_policy


class _ImagesOnly:
    """A stand-in domain for --image: every image guarded, nothing running."""

    def __init__(self, specs):
        from vmceph.domxml import RBDDisk
        from vmceph.ceph import split_spec
        disks = []
        for s in specs:
            try:
                pool, ns, img = split_spec(s)
            except ValueError as e:
                raise UsageError(str(e)) from None
            disks.append(RBDDisk(None, pool, ns, img, None, "disk", False, False, (), None, None))
        self.name = None
        self.uuid = None
        self.rbd_disks = tuple(disks)
        self.guarded_disks = tuple(disks)


def _domain_active(uri, dom, deadline):
    if dom.name is None:
        return False, "no domain"
    from vmceph import virt
    hv = virt.Hypervisor(uri, deadline)
    try:
        state, _ = hv.state(dom.name, dom.uuid)
        return state in virt.ACTIVE_STATES, virt.STATE_NAMES.get(state, str(state))
    except virt.VirtError as e:
        return False, "unknown (%s)" % e
    finally:
        hv.close()


def cmd_check(args):
    from vmceph import facts, safety
    from vmceph.cluster import parse_membership, parse_node_addresses
    from vmceph.ocf import Deadline, OCFError
    if bool(args.config) == bool(args.image):
        raise UsageError("give a domain XML file or --image POOL/IMAGE (not both)")
    for parse, value in ((parse_node_addresses, args.node_addresses),
                         (parse_membership, args.membership)):
        try:
            parse(value)
        except ValueError as e:
            raise UsageError(str(e)) from None
    dom = _load(args.config) if args.config else _ImagesOnly(args.image)
    deadline = Deadline(args.timeout, margin_s=0)
    active, state = _domain_active(args.hypervisor, dom, deadline)
    try:
        with facts.gather_with(_Args(args), deadline, None, dom, active,
                               on_node=args.node) as g:
            verdict = safety.decide_start(g.facts)
            report = _report(dom, g, verdict, state)
    except OCFError as e:
        report = {"domain": dom.name, "error": e.reason, "decision": "fail",
                  "may_start": False, "reasons": [e.reason]}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_report(report)
    return EXIT_OK if report["may_start"] else EXIT_REFUSED


def _report(dom, g, verdict, state):
    from vmceph.safety import Owner, UNKNOWN, ip_of
    f = g.facts

    def who(addr):
        o = f.owners.get(ip_of(addr), Owner(None, UNKNOWN))
        return {"node": o.node, "node_state": o.state, "source": o.source or None}

    images = []
    for img in f.images:
        images.append({
            "image": img.spec, "exists": img.exists, "error": img.error,
            "permission_denied": img.permission_denied, "lock_tag": img.lock_tag,
            "lockers": [dict({"entity": lk.entity, "cookie": lk.cookie, "addr": lk.addr},
                             **who(lk.addr)) for lk in img.lockers],
            "watchers": [dict({"entity": w.entity, "addr": w.addr, "cookie": w.cookie},
                              **who(w.addr)) for w in img.watchers],
        })
    unguarded = [d.spec for d in dom.rbd_disks if not d.guarded]
    return {
        "domain": dom.name, "domain_state_here": state, "local_node": g.local_node,
        "membership_source": g.membership_source,
        "cluster_nodes": {n: i.state for n, i in sorted(g.nodes.items())},
        "quorum_ok": f.quorum_ok, "quorum": f.quorum_detail,
        "images": images, "unguarded_images": unguarded,
        "decision": verdict.kind, "may_start": verdict.may_start,
        "reasons": list(verdict.reasons),
        "would_recover": [r.describe() for r in verdict.recoveries],
    }


def _print_report(r):
    if r.get("error"):
        print("cannot decide: %s" % r["error"])
        return
    print("domain:      %s (here: %s)" % (r["domain"] or "-", r["domain_state_here"]))
    print("this node:   %s; membership from %s" % (r["local_node"], r["membership_source"]))
    if r["cluster_nodes"]:
        print("nodes:       %s" % ", ".join("%s=%s" % kv for kv in r["cluster_nodes"].items()))
    print("ceph:        %s" % r["quorum"])
    for img in r["images"]:
        print("image %s%s" % (img["image"], "" if img["exists"] else " (MISSING)"))
        if img["error"]:
            print("    error: %s" % img["error"])
        for lk in img["lockers"]:
            print("    lock holder  %-14s %-28s node %s (%s)" % (
                lk["entity"], lk["addr"], lk["node"] or "?", lk["node_state"]))
        for w in img["watchers"]:
            print("    writer       %-14s %-28s node %s (%s)" % (
                w["entity"], w["addr"], w["node"] or "?", w["node_state"]))
        if img["exists"] and not img["watchers"] and not img["lockers"]:
            print("    no writer, no lock")
    for spec in r["unguarded_images"]:
        print("image %s: not guarded (read-only, shareable or snapshot)" % spec)
    print("decision:    %s" % r["decision"].upper())
    for reason in r["reasons"]:
        print("  - %s" % reason)


if __name__ == "__main__":
    sys.exit(main())
