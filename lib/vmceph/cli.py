"""``vmceph``: the administrator's view of what the agent sees and would decide.

    vmceph disks CONFIG [--json]        every disk of a domain XML: which RBD image it is
                                        (network disk, storage-pool volume, krbd device),
                                        how that was found, guarded or not and why
    vmceph check CONFIG [options]       quorum, holders, watchers, their nodes, and the
                                        decision 'start' would make, with its reasons
    vmceph check --image POOL/IMAGE     the same for one image, without a domain XML

``check`` uses the agent's own code (facts.gather_with + safety.decide_start): what it
prints is what the agent would do on this node now. Exit status of check: 0 start
allowed, 1 refused or Ceph unusable, 2 bad input. Exit status of disks: 0 every disk is
understood, 1 a disk cannot be guarded (validate-all would refuse it), 2 bad input.
"""

import argparse
import json
import sys

from vmceph import __version__

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

# Argument checks (issue 16): a FIFO given as --ceph-conf blocked 'check' forever, paths
# failing with ENAMETOOLONG/ELOOP/ENOTDIR printed an uncaught OSError, --timeout took -1, 0,
# nan and inf, and non-UTF-8 bytes in --ceph-user crashed later with UnicodeEncodeError.
# Every one is now a usage error (exit 2) before anything is opened.
TIMEOUT_MAX_S = 3600.0


def _timeout_arg(text):
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text) from None
    if not math.isfinite(value) or not 0 < value <= TIMEOUT_MAX_S:
        raise argparse.ArgumentTypeError("seconds must be more than 0 and at most %.0f: %r"
                                         % (TIMEOUT_MAX_S, text))
    return value


def _text_arg(text):
    from vmceph.ocf import _bad_text
    bad = _bad_text(text, multiline=False)
    if bad:
        from vmceph.ocf import escape
        raise argparse.ArgumentTypeError("%s %s" % (escape(text)[:200], bad))
    return text


def _ceph_id_arg(text):
    from vmceph.ocf import ceph_id
    text = _text_arg(text)
    try:
        ceph_id(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _file_problem(path):
    """Why ``path`` cannot be read as a regular file here, or None."""
    from vmceph.ocf import regular_file
    try:
        regular_file(path)
    except ValueError as e:  # NotHere too
        return str(e)
    return None


def _check_args(args):
    """What argparse cannot check alone: the files, before anything opens them."""
    from vmceph.ocf import shown
    defaults = {"ceph_conf": "/etc/ceph/ceph.conf", "ceph_keyring": ""}
    if getattr(args, "config", None):
        why = _file_problem(args.config)
        if why:
            raise UsageError("%s: %s" % (shown(args.config), why))
    for name, option in (("ceph_conf", "--ceph-conf"), ("ceph_keyring", "--ceph-keyring")):
        path = getattr(args, name, None)
        if not path:
            continue
        # the default conf may be missing (the command then says what it cannot check);
        # anything given, or present, must be a regular file (a FIFO would block librados)
        import os
        if path == defaults[name] and not os.path.lexists(path):
            continue
        why = _file_problem(path)
        if why:
            raise UsageError("%s %s: %s" % (option, shown(path), why))


def _parser():
    ap = argparse.ArgumentParser(
        prog="vmceph",
        description="Who holds the RBD images of a VM, and what ocf:vmceph:RBDVirtualDomain "
                    "would decide on this node.")
    ap.add_argument("--version", action="version", version="vmceph " + __version__)
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("disks", help="list the disks of a domain XML and the RBD image of each")
    d.add_argument("config", type=_text_arg, help="libvirt domain XML file")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    _resolution_args(d)
    d.add_argument("--ceph-conf", default="/etc/ceph/ceph.conf", type=_text_arg,
                   help="the resource's ceph_conf: every guarded disk must be in its cluster")
    d.add_argument("--ceph-user", default="", type=_ceph_id_arg,
                   help="client id, without 'client.'")

    c = sub.add_parser("check", help="show holders/watchers and the start decision")
    c.add_argument("config", nargs="?", type=_text_arg, help="libvirt domain XML file")
    c.add_argument("--image", action="append", default=[], metavar="POOL/[NS/]IMAGE",
                   type=_text_arg,
                   help="check this image (repeatable) instead of a domain's disks")
    c.add_argument("--ceph-conf", default="/etc/ceph/ceph.conf", type=_text_arg)
    c.add_argument("--ceph-user", default="", type=_ceph_id_arg,
                   help="client id, without 'client.'")
    c.add_argument("--ceph-keyring", default="", type=_text_arg)
    c.add_argument("--node-addresses", default="", metavar="'NODE=IP[,IP] ...'",
                   type=_text_arg)
    c.add_argument("--membership", default="", metavar="'NODE=member|fenced|unclean ...'",
                   type=_text_arg, help="outside a Pacemaker cluster: the state of each node")
    c.add_argument("--node", default=None, type=_text_arg,
                   help="this node's name (default: as Pacemaker or the host name says)")
    c.add_argument("--unknown-client-policy", default="refuse", choices=("refuse", "blocklist"))
    _resolution_args(c, hypervisor=False)
    c.add_argument("--hypervisor", default="qemu:///system", type=_text_arg,
                   help="libvirt URI, to tell whether the domain runs here")
    c.add_argument("--timeout", type=_timeout_arg, default=30.0,
                   help="seconds (default 30, at most 3600)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    from vmceph import configcmd   # definitions kept in Ceph (docs/definitions.md)
    configcmd.add_parser(sub, _text_arg, _ceph_id_arg, _timeout_arg)
    from vmceph import status   # the cluster view (docs/status.md)
    status.add_parsers(sub, _text_arg, _ceph_id_arg, _timeout_arg)
    return ap


def _resolution_args(sub, hypervisor=True):
    if hypervisor:
        sub.add_argument("--hypervisor", default="qemu:///system", type=_text_arg,
                         help="libvirt URI that describes the storage pools of volume disks")
        sub.add_argument("--timeout", type=_timeout_arg, default=30.0,
                         help="seconds (default 30, at most 3600)")
    sub.add_argument("--no-libvirt", action="store_true",
                     help="do not ask libvirt (volume disks stay unresolved)")
    sub.add_argument("--unguarded", default="", metavar="'vdb vdc'", type=_text_arg,
                     help="the resource's unguarded_disks parameter")
    sub.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)  # tests
    sub.add_argument("--dev-root", default="/dev", help=argparse.SUPPRESS)  # tests


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        _check_args(args)
        if args.cmd == "disks":
            return cmd_disks(args)
        if args.cmd == "config":
            from vmceph import configcmd
            return configcmd.run(args)
        if args.cmd in ("status", "explain"):
            from vmceph import status
            return getattr(status, "cmd_" + args.cmd)(args)
        return cmd_check(args)
    except UsageError as e:
        from vmceph.ocf import escape
        sys.stderr.write("vmceph: %s\n" % escape(str(e)))
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
    except OSError as e:  # ENAMETOOLONG, ELOOP, ENOTDIR, EACCES... (issue 16)
        raise UsageError("%s: %s" % (path, e.strerror or e)) from None


def _resolve(args, dom, deadline):
    """Resolution (vmceph.disks) of a domain's disks as the agent does it on this node."""
    from vmceph import disks
    hv = None
    if not args.no_libvirt:
        from vmceph import virt
        hv = virt.Hypervisor(args.hypervisor, deadline)
    try:
        return disks.resolve(dom, hv, disks.parse_unguarded(args.unguarded),
                             sys_root=args.sys_root, dev_root=args.dev_root)
    finally:
        if hv is not None:
            hv.close()


def _why_unguarded(d):
    why = []
    if d.readonly:
        why.append("read-only")
    if d.shareable:
        why.append("shareable")
    if d.snapshot:
        why.append("snapshot %s" % d.snapshot)
    if d.device not in ("disk", "lun", "floppy"):
        why.append(d.device)
    return ", ".join(why)


def disks_report(r, cluster_problems=(), cluster_note=None):
    """[one dict per disk] of a disks.Resolution: the --json output of ``vmceph disks``."""
    out = []
    for d in r.domain.rbd_disks:
        j = {k: d.as_json()[k] for k in ("target", "pool", "namespace", "image", "snapshot",
                                         "guarded", "readonly", "shareable", "device", "spec",
                                         "hosts", "auth_user", "config_file", "form",
                                         "resolved_by", "krbd_client")}
        j["why_unguarded"] = None if d.guarded else _why_unguarded(d)
        j["problem"] = None
        out.append(j)
    problems = {}
    for p in tuple(r.problems) + tuple(cluster_problems):
        if p.kind != "warning":
            problems[p.target] = "; ".join(filter(None, (problems.get(p.target), p.reason)))
    for j in out:
        j["problem"] = problems.get(j["target"])
    unguarded = {id(o): why for o, why in r.domain.unguarded}
    for o in r.domain.others:
        out.append({"target": o.target, "pool": None, "namespace": None, "image": None,
                    "snapshot": None, "guarded": False, "readonly": o.readonly,
                    "shareable": o.shareable, "device": o.device, "spec": None, "hosts": [],
                    "auth_user": None, "config_file": None,
                    "form": "unresolved" if o.target in problems and id(o) not in unguarded
                    else "other",
                    "resolved_by": None, "krbd_client": None, "disk_type": o.type,
                    "source": dict(o.source), "why_unguarded": unguarded.get(id(o)),
                    "problem": problems.get(o.target or "?")})
    return out


def cmd_disks(args):
    from vmceph import disks
    from vmceph.ocf import Deadline
    dom = _load(args.config)
    r = _resolve(args, dom, Deadline(args.timeout, margin_s=0))
    cluster_note = None
    try:
        from vmceph.cluster import resolve as resolve_name   # monitors given by name
        cluster = disks.check_cluster(r.domain, args.ceph_conf, args.ceph_user or None,
                                      resolver=lambda n: resolve_name(n, 2.0))
    except OSError as e:
        cluster, cluster_note = [], "cluster check skipped: %s cannot be read (%s)" % (
            args.ceph_conf, e)
    report = disks_report(r, cluster)
    failed = [p for p in tuple(r.problems) + tuple(cluster) if p.kind != disks.WARNING]
    notes = list(r.warnings) + [p.reason for p in cluster if p.kind == disks.WARNING] + \
        ([cluster_note] if cluster_note else [])
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_disks(dom, r, report, notes)
    for p in failed:
        sys.stderr.write("vmceph: %s\n" % p.reason)
    return EXIT_REFUSED if failed else EXIT_OK


def _print_disks(dom, r, report, notes):
    rbd = [j for j in report if j["spec"]]
    others = [j for j in report if not j["spec"]]
    print("domain %s (uuid %s): %d RBD disk(s)%s" % (
        dom.name, dom.uuid or "-", len(rbd),
        ", other disks: %s" % ", ".join(j["target"] or "?" for j in others) if others else ""))
    for j in rbd:
        state = "guarded" if j["guarded"] else "not guarded (%s)" % j["why_unguarded"]
        if j["problem"]:
            state = "REFUSED: " + j["problem"]
        print("  %-6s %-40s %s" % (j["target"] or "?", j["spec"], state))
        print("         %-8s via %s" % (j["form"], j["resolved_by"]))
    for j in others:
        src = j["source"].get("file") or j["source"].get("dev") or \
            "/".join(filter(None, (j["source"].get("pool"), j["source"].get("volume")))) or \
            j["source"].get("name") or "-"
        if j["form"] == "unresolved":
            state = "CANNOT BE GUARDED: %s" % j["problem"]
        else:
            state = "not guarded (%s)" % j["why_unguarded"]
        print("  %-6s %-40s %s" % (j["target"] or "?", "%s %s" % (j["disk_type"], src), state))
    for n in notes:
        print("note: %s" % n)


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
    deadline = Deadline(args.timeout, margin_s=0)
    dom = _load(args.config) if args.config else _ImagesOnly(args.image)
    if args.config:  # the images the agent would inspect: every form of RBD disk
        r = _resolve(args, dom, deadline)
        if r.problems:
            reasons = [p.reason for p in r.problems]
            report = {"domain": dom.name, "error": "; ".join(reasons), "decision": "fail",
                      "may_start": False, "reasons": reasons}
            if args.json:
                json.dump(report, sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                _print_report(report)
            return EXIT_REFUSED
        dom = r.domain
    active, state = _domain_active(args.hypervisor, dom, deadline)
    try:
        with facts.gather_with(_Args(args), deadline, None, dom, active,
                               on_node=args.node) as g:
            verdict = safety.decide_start(g.facts)
            report = _report(dom, g, verdict, state)
    except OCFError as e:
        report = {"domain": dom.name, "error": e.reason, "decision": "fail",
                  "may_start": False, "reasons": [e.reason]}
    from vmceph.inputs import restore_blocking_stdio
    restore_blocking_stdio()  # librados set O_NONBLOCK on stdout: a long report was cut
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
