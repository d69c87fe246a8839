"""``vmceph status`` and ``vmceph explain``: one view of the cluster from any node.

For every ocf:vmceph:RBDVirtualDomain resource: the node(s) Pacemaker runs it on, libvirt's
state there, each guarded image with its writers and the nodes they are on, the last failed
action with its exit reason; for every node: its Pacemaker state, ``#health-ceph`` and the
Ceph client addresses it publishes. A mismatch is flagged on its line (``judge``).

Sources, each bounded (docs/status.md):
- ``crm_mon -1 -A --output-as=xml``: nodes (cluster.parse_crm_mon), resources and failures
  (parsed here); ``cibadmin -Q -o resources``: the resources' parameters (config, Ceph
  user, node_addresses); cluster.Cluster for the CIB's permanent attributes (addresses) and
  attrd (``#health-ceph``: crm_mon never lists attributes starting with '#');
- Ceph through CephSession (quorum, inspect_all) and vmceph.defstore for ``ceph:`` configs;
- libvirt: the local hypervisor URI for this node, for another node the URI a live
  migration to it would use (migration.migration_args), each within a few seconds.

The collection (``collect``) and the judgement (``judge``, pure) are separate so the flags
are tested on hand-made views; ``render`` makes the table.
"""

import json
import sys
import time
import xml.etree.ElementTree as ET

AGENT = "ocf:vmceph:RBDVirtualDomain"
SCHEMA_VERSION = 1
LIBVIRT_CAP_S = 4.0


# ------------------------------------------------------------------ Pacemaker's XML

def parse_resources(xml_text):
    """[{id, agent, role, active, failed, managed, nodes}] of every primitive crm_mon lists
    (inside groups and clones too; a clone instance's id is 'rsc:N')."""
    root = ET.fromstring(xml_text)
    out = []
    res = root.find("resources")
    if res is None:
        return out
    for r in res.iter("resource"):
        out.append({"id": r.get("id"), "agent": r.get("resource_agent"),
                    "role": r.get("role"), "active": r.get("active") == "true",
                    "failed": r.get("failed") == "true", "managed": r.get("managed") != "false",
                    "nodes": [n.get("name") for n in r.iterfind("node")],
                    # an action in flight (record-pending, Pacemaker's default): 'Migrating'
                    "pending": r.get("pending")})
    return out


def parse_failures(xml_text):
    """{resource id: [failure]} from crm_mon's <failures>, newest first. A failure is
    {op, task, node, exitcode, exitstatus, exitreason, when}; the resource is the op_key
    without its '_TASK_INTERVAL' tail."""
    root = ET.fromstring(xml_text)
    out = {}
    for f in root.iterfind("failures/failure"):
        key = f.get("op_key") or ""
        task = f.get("task")
        if task and ("_%s_" % task) in key:   # 'vm2_migrate_to_0': the task has a '_'
            rsc = key[:key.rindex("_%s_" % task)]
        else:
            parts = key.rsplit("_", 2)
            rsc = parts[0] if len(parts) == 3 else key
            task = task or (parts[1] if len(parts) == 3 else "?")
        try:
            code = int(f.get("exitcode"))
        except (TypeError, ValueError):
            code = None
        out.setdefault(rsc, []).append({
            "op": key, "task": task, "node": f.get("node"), "exitcode": code,
            "exitstatus": f.get("exitstatus"), "exitreason": f.get("exitreason") or "",
            "when": f.get("last-rc-change") or ""})
    for fails in out.values():
        fails.sort(key=lambda x: _when(x["when"]), reverse=True)
    return out


def _when(text):
    """Seconds of a Pacemaker time: 'Tue Dec  1 15:41:18 2026' (node history) or
    '2026-12-01 16:29:01Z' (failures, 2.1.5 in the lab); 0 if neither."""
    import calendar
    for fmt in ("%a %b %d %H:%M:%S %Y", "%Y-%m-%d %H:%M:%SZ"):
        try:
            return calendar.timegm(time.strptime(" ".join(text.split()), fmt))
        except ValueError:
            continue
    return 0


def parse_primitives(xml_text):
    """{id: {agent, params}} of the primitives in ``cibadmin -Q -o resources``
    (instance attributes only; a rule-based set is taken as it is written)."""
    root = ET.fromstring(xml_text)
    out = {}
    for p in root.iter("primitive"):
        agent = ":".join(filter(None, (p.get("class"), p.get("provider"), p.get("type"))))
        params = {}
        for ia in p.iterfind("instance_attributes"):
            for nv in ia.iterfind("nvpair"):
                params[nv.get("name")] = nv.get("value")
        out[p.get("id")] = {"agent": agent, "params": params}
    return out


def base_id(rid):
    """A clone instance 'vm1:0' is primitive 'vm1'."""
    return (rid or "").split(":")[0]


# ------------------------------------------------------------------ judgement (pure)

RUNNING_LIBVIRT = ("running", "blocked", "paused", "in shutdown")


def judge(resource):
    """The mismatches of one resource row (list of sentences). The row is what collect
    builds: pacemaker_nodes, libvirt {node: state or None}, images [{spec, writers:
    [{addr, node, node_state}], error}]."""
    flags = []
    placed = resource.get("pacemaker_nodes") or []
    # during a live migration both QEMUs have the images open: two writers are expected
    # (crm_mon 2.1.5 shows it as the pending action, or as the role: either is taken)
    migrating = any("migrat" in (resource.get(k) or "").lower() for k in ("pending", "role"))
    if len(placed) > 1 and not migrating:   # migrate_from done: source and target, briefly
        flags.append("Pacemaker has it active on several nodes: %s" % ", ".join(placed))
    for node, state in sorted((resource.get("libvirt") or {}).items()):
        if state is None:
            continue
        runs = state in RUNNING_LIBVIRT
        if migrating:
            continue      # the domain is on its way: either node may show it, or both
        if node in placed and not runs:
            flags.append("Pacemaker runs it on %s, libvirt there says %s" % (node, state))
        elif node not in placed and runs:
            flags.append("libvirt runs it on %s (%s), where Pacemaker does not" % (node, state))
    for img in resource.get("images") or []:
        writers = img.get("writers") or []
        nodes = sorted({w.get("node") or "?" for w in writers})
        unknown = [w["addr"] for w in writers if not w.get("node")]
        for addr in unknown:
            flags.append("%s is written from %s, which is no known node's address"
                         % (img["spec"], addr))
        known = [n for n in nodes if n != "?"]
        if migrating:
            continue      # source, target or both write until Pacemaker records the move
        if len(nodes) > 1:
            flags.append("SPLIT BRAIN? %s has writers on %s" % (img["spec"], ", ".join(nodes)))
        elif known and not placed:
            flags.append("%s is written from %s while Pacemaker runs the resource nowhere "
                         "(a writer with no resource)" % (img["spec"], known[0]))
        elif known and placed and known[0] not in placed:
            flags.append("Pacemaker runs it on %s, but %s is written from %s"
                         % (", ".join(placed), img["spec"], known[0]))
    return flags


def judge_nodes(nodes):
    flags = []
    for n in nodes:
        h = (n.get("health_ceph") or "").lower()
        if h in ("red", "yellow"):
            flags.append("node %s: #health-ceph is %s" % (n["name"], h))
    return flags


# ------------------------------------------------------------------ collection

class Sources:
    """How collect reaches the outside; tests replace it."""

    def __init__(self, deadline, log=None, runner=None):
        from vmceph import bounded
        self.deadline, self.log = deadline, log
        self.runner = runner or bounded.command

    def command(self, argv, cap=10.0):
        return self.runner(argv, timeout=self.deadline.at_most(cap))

    def cluster(self):
        from vmceph.cluster import Cluster
        return Cluster(self.deadline, self.log, runner=self.runner)

    def ceph(self, conf, user, keyring):
        from vmceph.ceph import CephSession
        s = CephSession(conf, user or None, keyring or None, self.deadline, self.log)
        s.connect()
        return s

    def libvirt_state(self, uri, name, uuid):
        from vmceph import virt
        from vmceph.ocf import Deadline
        hv = virt.Hypervisor(uri, Deadline(min(LIBVIRT_CAP_S, max(0.5, self.deadline.remaining())),
                                           margin_s=0), self.log)
        try:
            state, _ = hv.state(name, uuid)
            return virt.STATE_NAMES.get(state, str(state))
        finally:
            hv.close()

    def local_node(self):
        from vmceph.cluster import Cluster
        try:
            return Cluster(self.deadline, self.log, runner=self.runner).local_name()
        except Exception:
            import socket
            return socket.gethostname()


def _params(raw):
    from vmceph.ocf import Params
    from vmceph.rbdvd_params import SPEC
    return Params(SPEC, {"OCF_RESKEY_" + k: v for k, v in raw.items() if v is not None})


def _domain_of(config, session, log):
    """(Domain or None, note) of a resource's config, read from here."""
    from vmceph import defstore
    from vmceph.domxml import DomainXMLError, load_domain, parse_domain
    try:
        ref = defstore.parse_uri(config or "")
    except ValueError as e:
        return None, str(e)
    if ref is None:
        try:
            return load_domain(config), None
        except (DomainXMLError, OSError) as e:
            return None, "domain XML not readable on this node: %s" % e
    if session is None:
        return None, "Ceph unreachable: definition %s not read" % ref.uri
    try:
        e = defstore.Store(session, ref.pool, ref.namespace).current(ref.name)
    except defstore.DefError as err:
        return None, str(err)
    if e is None:
        return None, "no definition %s in Ceph" % ref.uri
    try:
        return parse_domain(e["xml"].encode("utf-8"), source=ref.uri), None
    except DomainXMLError as err:
        return None, str(err)


def _pcmk_error(tool, r):
    """A sentence from a failed Pacemaker tool: with --output-as=xml its error is XML
    (<status code="102" message="Not connected"><errors><error>...)."""
    text = (r.err or r.out or "").strip()
    try:
        root = ET.fromstring(text)
        st = root.find("status")
        if st is not None:
            errs = [e.text.strip() for e in st.iterfind("errors/error") if e.text]
            text = "; ".join([st.get("message") or ""] + errs)
    except ET.ParseError:
        pass
    return "%s failed (rc %d): %s" % (tool, r.rc, " ".join(text.split())[:300])


def collect(src, ceph_opts=None):
    """The whole view (a JSON-able dict, see docs/status.md for its schema)."""
    from vmceph import cluster as pcmk
    from vmceph.ceph import CephError
    view = {"schema": SCHEMA_VERSION, "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
            "local_node": src.local_node(), "pacemaker": {"ok": True, "error": None},
            "ceph": {"ok": False, "detail": None}, "nodes": [], "resources": [],
            "flags": []}
    mon_xml = cib_xml = None
    try:
        r = src.command(["crm_mon", "-1", "-A", "--output-as=xml"])
        if r.rc != 0:
            raise pcmk.ClusterError(_pcmk_error("crm_mon", r))
        mon_xml = r.out
        r = src.command(["cibadmin", "-Q", "-o", "resources"])
        if r.rc != 0:
            raise pcmk.ClusterError(_pcmk_error("cibadmin", r))
        cib_xml = r.out
    except Exception as e:  # FileNotFoundError, Timeout, ClusterError
        view["pacemaker"] = {"ok": False, "error": str(e) or type(e).__name__}
    nodes, resources, failures, prims = {}, [], {}, {}
    if mon_xml is not None and cib_xml is not None:
        try:
            cl = src.cluster()
            try:
                nodes = cl.nodes()
            except pcmk.ClusterError:
                nodes = pcmk.parse_crm_mon(mon_xml)
            resources = parse_resources(mon_xml)
            failures = parse_failures(mon_xml)
            prims = parse_primitives(cib_xml)
        except ET.ParseError as e:
            view["pacemaker"] = {"ok": False, "error": "unreadable XML: %s" % e}
    ours = [r for r in resources if (r["agent"] or "").startswith(AGENT)
            or prims.get(base_id(r["id"]), {}).get("agent") == AGENT]
    # Ceph with the first resource's credentials unless given
    opts = dict(ceph_opts or {})
    if not opts.get("conf"):
        p = prims.get(base_id(ours[0]["id"]), {}).get("params", {}) if ours else {}
        opts = {"conf": p.get("ceph_conf") or "/etc/ceph/ceph.conf",
                "user": p.get("ceph_user"), "keyring": p.get("ceph_keyring")}
    session = None
    try:
        session = src.ceph(opts.get("conf"), opts.get("user"), opts.get("keyring"))
        ok, detail, _, _ = session.quorum()
        view["ceph"] = {"ok": ok, "detail": detail}
        local_ips = session.client_addrs()
    except CephError as e:
        view["ceph"] = {"ok": False, "detail": str(e)}
        local_ips = []
        if session is not None:
            session.close()
            session = None
    try:
        static = {}
        for r in ours:
            raw = prims.get(base_id(r["id"]), {}).get("params", {})
            try:
                static.update(pcmk.parse_node_addresses(raw.get("node_addresses") or ""))
            except ValueError:
                pass
        owners = pcmk.owners_map(view["local_node"], local_ips, nodes, static)
        health_name = pcmk.HEALTH_ATTRIBUTE
        cl = src.cluster() if nodes else None
        for name in sorted(nodes):
            info = nodes[name]
            health = info.attributes.get(health_name)
            if health is None and cl is not None:
                try:
                    health = cl.query_attribute(health_name, name)
                except Exception:
                    health = None
            view["nodes"].append({
                "name": name, "state": info.state, "health_ceph": health,
                "addresses": (info.attributes.get(pcmk.ADDR_ATTRIBUTE) or "").split()})
        for r in ours:
            view["resources"].append(_resource_row(src, r, prims, failures, nodes, owners,
                                                   session, view["local_node"]))
    finally:
        if session is not None:
            session.close()
    view["flags"] = judge_nodes(view["nodes"])
    if not view["ceph"]["ok"]:
        view["flags"].append("Ceph: %s" % view["ceph"]["detail"])
    if not view["pacemaker"]["ok"]:
        view["flags"].append("Pacemaker: %s" % view["pacemaker"]["error"])
    return view


def _resource_row(src, r, prims, failures, nodes, owners, session, local):
    from vmceph.migration import migration_args
    from vmceph.safety import ip_of
    raw = prims.get(base_id(r["id"]), {}).get("params", {})
    config = raw.get("config")
    dom, note = _domain_of(config, session, src.log)
    row = {"id": r["id"], "domain": dom.name if dom else None, "config": config,
           "role": r["role"], "managed": r["managed"], "failed": r["failed"],
           "pending": r.get("pending"),
           "pacemaker_nodes": r["nodes"], "libvirt": {}, "images": [], "note": note,
           "last_failure": (failures.get(r["id"]) or failures.get(base_id(r["id"])) or
                            [None])[0], "flags": []}
    if dom is not None:
        p = _params(raw)
        for node in sorted(set(r["nodes"]) | ({local} if local in nodes else set())):
            try:
                if node == local:   # unset: libvirt's default here, as the agent asks it
                    from vmceph import virt
                    uri = p.hypervisor or virt.default_uri(2.0)
                else:
                    uri = migration_args(p, node)[0]
                row["libvirt"][node] = src.libvirt_state(uri, dom.name, dom.uuid)
            except Exception as e:  # unknown, not a mismatch
                row["libvirt"][node] = None
                row.setdefault("libvirt_errors", {})[node] = str(e)[:200]
        specs = [d.spec for d in dom.guarded_disks]
        facts = session.inspect_all(specs) if (session is not None and specs) else []
        for spec, f in zip(specs, facts):
            writers = []
            for w in f.watchers:
                o = owners.get(ip_of(w.addr))
                writers.append({"addr": w.addr, "entity": w.entity,
                                "node": o.node if o else None,
                                "node_state": o.state if o else None})
            holders = [{"addr": lk.addr, "entity": lk.entity,
                        "node": owners[ip_of(lk.addr)].node if ip_of(lk.addr) in owners
                        else None} for lk in f.lockers]
            row["images"].append({"spec": spec, "exists": f.exists, "error": f.error,
                                  "writers": writers, "lock_holders": holders})
        if session is None and specs:
            row["images"] = [{"spec": s, "exists": None, "error": "Ceph unreachable",
                              "writers": [], "lock_holders": []} for s in specs]
    row["flags"] = judge(row)
    return row


# ------------------------------------------------------------------ rendering

class _Paint:
    def __init__(self, on):
        self.on = on

    def __call__(self, text, colour):
        if not self.on:
            return text
        code = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}[colour]
        return "\033[%sm%s\033[0m" % (code, text)


def _table(rows):
    """Lines of ``rows`` (lists of cells; a cell is text or (text, colour)) in columns as
    wide as their widest cell; colour is applied after padding so columns stay aligned."""
    widths = {}
    for row in rows:
        for k, cell in enumerate(row[:-1]):
            text = cell[0] if isinstance(cell, tuple) else cell
            widths[k] = max(widths.get(k, 0), len(text))
    return rows, widths


def render(view, colour=False):
    c = _Paint(colour)
    out = []
    pm = "ok" if view["pacemaker"]["ok"] else c("UNAVAILABLE: %s" % view["pacemaker"]["error"],
                                                "red")
    ceph = view["ceph"]["detail"] or "-"
    out.append("vmceph status from %s at %s; Pacemaker %s; Ceph %s" % (
        view["local_node"], view["generated"], pm,
        ceph if view["ceph"]["ok"] else c(ceph, "red")))
    out.append("")
    rows = [["RESOURCE", "ROLE", "PACEMAKER ON", "LIBVIRT", "IMAGES: WRITERS"]]
    notes = {}          # row index -> lines printed under it (failure, mismatches)
    for r in view["resources"]:
        lv = ", ".join("%s=%s" % (n, s or "?") for n, s in sorted(r["libvirt"].items())) or "-"
        lines = []
        for img in r["images"] or []:
            ws = ", ".join("%s@%s" % (w["entity"], w["node"] or w["addr"])
                           for w in img["writers"]) or ("error: " + img["error"]
                                                        if img.get("error") else "no writer")
            lines.append("%s: %s" % (img["spec"], ws))
        if not lines:
            lines = [r["note"] or "-"]
        role = r.get("pending") or r["role"] or "-"
        rows.append([r["id"], role, ",".join(r["pacemaker_nodes"]) or "-", lv, lines[0]])
        rows += [["", "", "", "", line] for line in lines[1:]]
        extra = []
        lf = r.get("last_failure")
        if lf:
            extra.append("last failure: %s on %s (rc %s, %s): %s" % (
                lf["task"], lf["node"], lf["exitcode"], lf["when"],
                lf["exitreason"] or lf["exitstatus"] or "-"))
        extra += [c("MISMATCH: " + f, "red") for f in r["flags"]]
        notes[len(rows) - 1] = extra
    _, widths = _table(rows)
    for k, row in enumerate(rows):
        out.append(" ".join(cell.ljust(widths[j]) if j < len(row) - 1 else cell
                            for j, cell in enumerate(row)).rstrip())
        out += ["  " + x for x in notes.get(k, [])]
    out.append("")
    rows = [["NODE", "STATE", "#HEALTH-CEPH", "CEPH ADDRESSES"]]
    for n in view["nodes"]:
        rows.append([n["name"], n["state"], n["health_ceph"] or "-",
                     " ".join(n["addresses"]) or "-"])
    _, widths = _table(rows)
    for k, row in enumerate(rows):
        cells = [cell.ljust(widths[j]) if j < len(row) - 1 else cell
                 for j, cell in enumerate(row)]
        if k and row[2] in ("green", "red", "yellow"):
            cells[2] = c(cells[2], row[2])
        out.append(" ".join(cells).rstrip())
    for f in view["flags"]:
        out.append(c("! " + f, "red"))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ commands

def add_parsers(sub, text_arg, ceph_id_arg, timeout_arg):
    for name, helptext in (("status", "one table for the whole cluster: resources, nodes, "
                                      "writers, health, last failures"),
                           ("explain", "why the last start/migrate of VM failed, with the "
                                       "facts recomputed now")):
        p = sub.add_parser(name, help=helptext)
        if name == "explain":
            p.add_argument("vm", type=text_arg, metavar="VM",
                           help="the resource id or the domain name")
        else:
            p.add_argument("--watch", type=float, nargs="?", const=2.0, default=None,
                           metavar="SECONDS", help="refresh every SECONDS (default 2)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--ceph-conf", default="", type=text_arg,
                       help="default: the first resource's ceph_conf")
        p.add_argument("--ceph-user", default="", type=ceph_id_arg)
        p.add_argument("--ceph-keyring", default="", type=text_arg)
        p.add_argument("--timeout", type=timeout_arg, default=30.0,
                       help="seconds for the whole view (default 30)")


def _opts(args):
    return {"conf": args.ceph_conf, "user": args.ceph_user, "keyring": args.ceph_keyring}


def cmd_status(args, src_factory=None):
    from vmceph.ocf import Deadline
    from vmceph.inputs import restore_blocking_stdio
    while True:
        src = (src_factory or Sources)(Deadline(args.timeout, margin_s=0))
        view = collect(src, _opts(args))
        restore_blocking_stdio()
        if args.json:
            text = json.dumps(view, indent=2, sort_keys=True) + "\n"
        else:
            text = render(view, colour=sys.stdout.isatty())
        if args.watch is not None and sys.stdout.isatty():
            sys.stdout.write("\033[H\033[2J")
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.watch is None:
            bad = any(r["flags"] for r in view["resources"]) or view["flags"]
            return 1 if bad else 0
        time.sleep(max(0.5, args.watch))


def find_resource(view, vm):
    for r in view["resources"]:
        if vm in (r["id"], base_id(r["id"]), r["domain"]):
            return r
    return None


def cmd_explain(args, src_factory=None):
    from vmceph.ocf import Deadline
    from vmceph.inputs import restore_blocking_stdio
    deadline = Deadline(args.timeout, margin_s=0)
    src = (src_factory or Sources)(deadline)
    view = collect(src, _opts(args))
    r = find_resource(view, args.vm)
    if r is None:
        sys.stderr.write("vmceph explain: no RBDVirtualDomain resource or domain %r (known: "
                         "%s)\n" % (args.vm, ", ".join(x["id"] for x in view["resources"])
                                    or "none"))
        return 2
    out = {"resource": r["id"], "domain": r["domain"], "last_failure": r["last_failure"],
           "pacemaker_nodes": r["pacemaker_nodes"], "flags": r["flags"], "now": None}
    lf = r["last_failure"]
    node = (lf or {}).get("node") or (r["pacemaker_nodes"] or [view["local_node"]])[0]
    out["now"] = _decide_now(src, r, node, deadline)
    restore_blocking_stdio()
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return 0
    lines = ["resource %s (domain %s), Pacemaker runs it on: %s" % (
        r["id"], r["domain"] or "?", ", ".join(r["pacemaker_nodes"]) or "nowhere")]
    if lf:
        lines.append("last failure: %s on %s at %s, rc %s (%s)" % (
            lf["task"], lf["node"], lf["when"], lf["exitcode"], lf["exitstatus"]))
        lines.append("  exit reason: %s" % (lf["exitreason"] or "(none given)"))
    else:
        lines.append("no failed action recorded by Pacemaker")
    now = out["now"]
    if now.get("error"):
        lines.append("now: cannot recompute the decision: %s" % now["error"])
    else:
        lines.append("now, a start on %s would be: %s" % (node, now["decision"].upper()))
        lines += ["  - %s" % x for x in now["reasons"]]
        lines += ["  would recover: %s" % x for x in now["would_recover"]]
    lines += ["MISMATCH: %s" % f for f in r["flags"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _decide_now(src, row, node, deadline):
    """The start decision for ``node``, recomputed now with the agent's own code."""
    from vmceph import facts, safety
    from vmceph.ocf import OCFError
    if row["domain"] is None:
        return {"error": row.get("note") or "domain unknown"}
    r = src.command(["cibadmin", "-Q", "-o", "resources"])
    prims = parse_primitives(r.out) if r.rc == 0 else {}
    raw = prims.get(base_id(row["id"]), {}).get("params", {})
    p = _params(raw)
    session = _maybe_session(src, p)
    try:
        dom, note = _domain_of(raw.get("config"), session, src.log)
    finally:
        if session is not None:
            session.close()
    if dom is None:
        return {"error": note}
    active = (row["libvirt"].get(node) or "") in RUNNING_LIBVIRT
    try:
        with facts.gather_with(p, deadline, None, dom, active, on_node=node) as g:
            v = safety.decide_start(g.facts)
            return {"decision": v.kind, "may_start": v.may_start, "reasons": list(v.reasons),
                    "would_recover": [x.describe() for x in v.recoveries]}
    except OCFError as e:
        return {"error": e.reason}


def _maybe_session(src, p):
    from vmceph.ceph import CephError
    try:
        return src.ceph(p.ceph_conf, p.ceph_user, p.ceph_keyring)
    except CephError:
        return None
