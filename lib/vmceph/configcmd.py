"""``vmceph config put|get|edit|diff|log|import``: domain definitions kept in Ceph
(vmceph.defstore, docs/definitions.md).

Exit status: 0 done; 1 refused (invalid XML, no such definition, Ceph unusable); 2 bad
input; 3 conflict (another put came first: nothing was stored).
"""

import os
import sys

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_CONFLICT = 0, 1, 2, 3


class Fail(Exception):
    def __init__(self, message, code=EXIT_REFUSED):
        super().__init__(message)
        self.code = code


def add_parser(sub, text_arg, ceph_id_arg, timeout_arg):
    """The ``config`` subcommand and its own subcommands, on ``sub`` (cli.py's)."""
    c = sub.add_parser("config", help="domain definitions kept in Ceph (put, get, edit, "
                                      "diff, log, import)")
    csub = c.add_subparsers(dest="config_cmd", metavar="SUBCOMMAND")
    csub.required = True

    def common(p):
        p.add_argument("--pool", default=os.environ.get("VMCEPH_DEF_POOL", ""), type=text_arg,
                       help="pool of the definitions (default $VMCEPH_DEF_POOL); not needed "
                            "when VM is given as ceph:POOL/NAME")
        p.add_argument("--namespace", default="", type=text_arg)
        p.add_argument("--ceph-conf", default="/etc/ceph/ceph.conf", type=text_arg)
        p.add_argument("--ceph-user", default="", type=ceph_id_arg,
                       help="client id, without 'client.'")
        p.add_argument("--ceph-keyring", default="", type=text_arg)
        p.add_argument("--timeout", type=timeout_arg, default=30.0,
                       help="seconds (default 30, at most 3600)")

    p = csub.add_parser("put", help="store FILE as the next version of VM's definition")
    p.add_argument("vm", type=text_arg, metavar="VM", help="NAME or ceph:POOL/NAME")
    p.add_argument("file", type=text_arg, metavar="FILE")
    p.add_argument("--expect-version", type=int, default=None, metavar="N",
                   help="store only if the current version is N (0: none yet); default: "
                        "the version current when the command starts")
    p.add_argument("-m", "--message", default="", type=text_arg, help="a comment for 'log'")
    common(p)
    p = csub.add_parser("get", help="print VM's definition")
    p.add_argument("vm", type=text_arg, metavar="VM")
    p.add_argument("--version", type=int, default=None, metavar="N",
                   help="a kept older version")
    common(p)
    p = csub.add_parser("edit", help="edit VM's definition with $VISUAL/$EDITOR and store it")
    p.add_argument("vm", type=text_arg, metavar="VM")
    p.add_argument("-m", "--message", default="", type=text_arg)
    common(p)
    p = csub.add_parser("diff", help="differences between two versions (default: the "
                                     "previous and the current)")
    p.add_argument("vm", type=text_arg, metavar="VM")
    p.add_argument("versions", type=int, nargs="*", metavar="N",
                   help="one version (against the current) or two")
    p.add_argument("--file", type=text_arg, default=None,
                   help="compare the current version with this file")
    common(p)
    p = csub.add_parser("log", help="the kept versions: who stored each, when, what changed")
    p.add_argument("vm", type=text_arg, metavar="VM")
    common(p)
    p = csub.add_parser("import", help="move a file-based resource's definition to Ceph")
    p.add_argument("file", nargs="?", type=text_arg, metavar="FILE",
                   help="the domain XML (default: the resource's config parameter)")
    p.add_argument("--resource", type=text_arg, default=None,
                   help="the Pacemaker resource (primitive) that uses FILE")
    p.add_argument("--apply", action="store_true",
                   help="also change the resource's config parameter (without restarting "
                        "the VM: unmanage, update, refresh, manage, each after the "
                        "cluster settled)")
    common(p)
    return c


# ------------------------------------------------------------------ plumbing

def run(args):
    try:
        return globals()["cmd_" + args.config_cmd](args)
    except Fail as e:
        from vmceph.ocf import escape
        sys.stderr.write("vmceph config: %s\n" % escape(str(e)))
        return e.code


def _ref(args, name=None):
    from vmceph import defstore
    try:
        return defstore.ref_of(name or args.vm, args.pool or None, args.namespace or None)
    except ValueError as e:
        raise Fail(str(e), EXIT_USAGE) from None


class _Opened:
    """A connected CephSession and the Store of the definition's pool."""

    def __init__(self, args, ref):
        self.args, self.ref = args, ref

    def __enter__(self):
        from vmceph import defstore
        from vmceph.ceph import CephError, CephSession
        from vmceph.ocf import Deadline
        a = self.args
        self.session = CephSession(a.ceph_conf, a.ceph_user or None, a.ceph_keyring or None,
                                   Deadline(a.timeout, margin_s=0))
        try:
            self.session.connect()
        except CephError as e:
            raise Fail("cannot reach Ceph: %s" % e) from None
        return defstore.Store(self.session, self.ref.pool, self.ref.namespace)

    def __exit__(self, *exc):
        self.session.close()
        from vmceph.inputs import restore_blocking_stdio
        restore_blocking_stdio()   # librados sets O_NONBLOCK on stdout: long output is cut
        return False


def _guard(fn, *a, **kw):
    from vmceph import defstore
    try:
        return fn(*a, **kw)
    except defstore.Conflict as e:
        raise Fail(str(e), EXIT_CONFLICT) from None
    except defstore.DefError as e:
        raise Fail(str(e)) from None


def _read_file(path):
    from vmceph import defstore
    try:
        with open(path, "rb") as f:
            data = f.read(defstore.MAX_DEF_BYTES + 1)
    except OSError as e:
        raise Fail("%s: %s" % (path, e.strerror or e), EXIT_USAGE) from None
    return data


def _current(store, ref):
    cur = _guard(store.current, ref.name)
    if cur is None:
        raise Fail("there is no definition %s (store one with 'vmceph config put %s FILE')"
                   % (ref.uri, ref.uri))
    return cur


def _print(text):
    sys.stdout.write(text)
    sys.stdout.flush()


# ------------------------------------------------------------------ subcommands

def cmd_put(args):
    ref = _ref(args)
    data = _read_file(args.file)
    with _Opened(args, ref) as store:
        expect = args.expect_version
        if expect is None:
            cur = _guard(store.current, ref.name)
            expect = cur["version"] if cur else 0
            if cur is not None and cur["xml"].encode("utf-8") == data:
                _print("%s: unchanged (version %d)\n" % (ref.uri, expect))
                return EXIT_OK
        entry = _guard(store.put, ref, data, expect, comment=args.message)
    _print("%s: version %d stored\n" % (ref.uri, entry["version"]))
    return EXIT_OK


def cmd_get(args):
    ref = _ref(args)
    with _Opened(args, ref) as store:
        if args.version is None:
            e = _current(store, ref)
        else:
            e = _guard(store.version, ref.name, args.version)
            if e is None:
                raise Fail("%s has no version %d kept (see 'vmceph config log')"
                           % (ref.uri, args.version))
    _print(e["xml"])
    return EXIT_OK


def cmd_edit(args):
    import shlex
    import subprocess
    import tempfile
    ref = _ref(args)
    with _Opened(args, ref) as store:
        cur = _guard(store.current, ref.name)
    base = cur["version"] if cur else 0
    fd, path = tempfile.mkstemp(prefix="vmceph-%s-v%d-" % (ref.name, base), suffix=".xml")
    with os.fdopen(fd, "w") as f:
        f.write(cur["xml"] if cur else "")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    rc = subprocess.call(shlex.split(editor) + [path])
    with open(path, "rb") as f:
        data = f.read()
    if rc != 0:
        raise Fail("the editor exited with %d: nothing stored (your text is in %s)"
                   % (rc, path))
    if cur is not None and data == cur["xml"].encode("utf-8"):
        os.unlink(path)
        _print("%s: unchanged (version %d)\n" % (ref.uri, base))
        return EXIT_OK
    try:
        with _Opened(args, ref) as store:
            entry = _guard(store.put, ref, data, base, comment=args.message)
    except Fail as e:
        raise Fail("%s\nyour edited text is kept in %s" % (e, path), e.code) from None
    os.unlink(path)
    _print("%s: version %d stored (applies at the next start of the domain)\n"
           % (ref.uri, entry["version"]))
    return EXIT_OK


def cmd_diff(args):
    from vmceph import defstore
    ref = _ref(args)
    with _Opened(args, ref) as store:
        cur = _current(store, ref)
        if args.file:
            other = _read_file(args.file).decode("utf-8", "replace")
            _print(defstore.diff(cur["xml"], other, "%s v%d" % (ref.uri, cur["version"]),
                                 args.file))
            return EXIT_OK
        vs = list(args.versions)
        if len(vs) > 2:
            raise Fail("give at most two versions", EXIT_USAGE)
        if not vs:
            vs = [cur["version"] - 1, cur["version"]]
        elif len(vs) == 1:
            vs.append(cur["version"])
        entries = []
        for v in vs:
            e = cur if v == cur["version"] else _guard(store.version, ref.name, v)
            if e is None:
                raise Fail("%s has no version %d kept (see 'vmceph config log')"
                           % (ref.uri, v))
            entries.append(e)
    a, b = entries
    _print(defstore.diff(a["xml"], b["xml"], "%s v%d (%s, %s)" % (ref.uri, a["version"],
                                                                   a["who"], a["when"]),
                         "%s v%d (%s, %s)" % (ref.uri, b["version"], b["who"], b["when"])))
    return EXIT_OK


def cmd_log(args):
    from vmceph import defstore
    ref = _ref(args)
    with _Opened(args, ref) as store:
        hist = _guard(store.history, ref.name)
    if not hist:
        raise Fail("there is no definition %s" % ref.uri)
    _print("".join(line + "\n" for line in defstore.log_lines(hist)))
    return EXIT_OK


# How long `import --apply` lets the cluster settle (crm_resource --wait) at each step: at
# least the longest monitor timeout of the examples (the depth-20 monitor, 60 s) plus room.
SETTLE_MIN = 120.0


def import_commands(resource, uri, settle=SETTLE_MIN):
    """The commands that switch ``resource`` to ``uri`` without restarting its VM: a
    changed parameter makes Pacemaker restart a resource (its digest changed; ``config``
    is unique="1", so no reload either), unless the resource is unmanaged while it changes
    and its history is refreshed (re-probed with the new parameter: the running domain is
    found by its remembered identity) before it is managed again.

    Each step waits for the cluster to settle (``crm_resource --wait``) before the next.
    Seen in the lab (Pacemaker 2.1.5, 3 of 4 runs): the new parameter makes the DC
    reschedule the unmanaged resource's recurring monitors at once ("Parameters to
    10000ms-interval monitor action ... changed ... (reschedule)"); a refresh while that
    monitor is in flight deletes the resource from the executor, the monitor's result is
    never sent, and 90 s later the DC records it as failed ("Node node2 did not send
    monitor result (via controller) within 90000ms", rc=1): "Recover vm2", a restart of
    the VM the import meant to keep. Waiting lets the rescheduled monitors report first;
    the second wait lets the probes after the refresh find the domain before the resource
    is managed again. ``crm_resource --wait`` recomputes the schedule from the CIB every
    second until no action is pending; a recurring monitor still recorded as pending
    (op-status -1) does not count as active there (Pacemaker's unpack skips it), so the
    wait lasts until its result is in the CIB, not only until it was launched."""
    import shlex
    r, u = shlex.quote(resource), shlex.quote(uri)
    wait = "--timeout=%ds" % int(settle)
    return [
        ["pcs", "resource", "unmanage", r],
        ["pcs", "resource", "update", r, "config=" + u],
        ["crm_resource", "--wait", wait],
        ["crm_resource", "--refresh", "--resource", r],
        ["crm_resource", "--wait", wait],
        ["pcs", "resource", "manage", r],
    ], [
        ["crm_resource", "--resource", resource, "--meta", "--set-parameter", "is-managed",
         "--parameter-value", "false"],
        ["crm_resource", "--resource", resource, "--set-parameter", "config",
         "--parameter-value", uri],
        ["crm_resource", "--wait", wait],
        ["crm_resource", "--refresh", "--resource", resource],
        ["crm_resource", "--wait", wait],
        ["crm_resource", "--resource", resource, "--meta", "--set-parameter", "is-managed",
         "--parameter-value", "true"],
    ]


def cmd_import(args):
    from vmceph import bounded, defstore
    from vmceph.domxml import DomainXMLError, parse_domain
    path = args.file
    if path is None:
        if not args.resource:
            raise Fail("give the domain XML FILE, or --resource to read it from Pacemaker",
                       EXIT_USAGE)
        try:
            r = bounded.command(["crm_resource", "--resource", args.resource,
                                 "--get-parameter", "config"], args.timeout)
        except (OSError, bounded.Timeout) as e:
            raise Fail("cannot ask Pacemaker for the config of %s: %s" % (args.resource, e))
        if r.rc != 0:
            raise Fail("crm_resource cannot read the config of %s: %s"
                       % (args.resource, (r.err or r.out).strip()[:300]))
        path = r.out.strip().splitlines()[-1].strip() if r.out.strip() else ""
        if defstore.is_uri(path):
            _print("%s already uses %s: nothing to import\n" % (args.resource, path))
            return EXIT_OK
    data = _read_file(path)
    try:
        name = parse_domain(data, source=path).name
    except DomainXMLError as e:
        raise Fail(str(e)) from None
    ref = _ref(args, name)
    with _Opened(args, ref) as store:
        cur = _guard(store.current, ref.name)
        if cur is not None:
            if cur["xml"].encode("utf-8") != data:
                raise Fail("%s exists already (version %d, stored by %s at %s) and differs "
                           "from %s: compare with 'vmceph config diff %s --file %s', then "
                           "'vmceph config put' what should be kept"
                           % (ref.uri, cur["version"], cur["who"], cur["when"], path,
                              ref.uri, path), EXIT_CONFLICT)
            _print("%s: already stored, identical to %s (version %d)\n"
                   % (ref.uri, path, cur["version"]))
        else:
            entry = _guard(store.put, ref, data, 0, comment="imported from %s" % path)
            _print("%s: version %d stored from %s\n" % (ref.uri, entry["version"], path))
    resource = args.resource or "RESOURCE"
    settle = max(args.timeout, SETTLE_MIN)
    shown, applied = import_commands(resource, ref.uri, settle)
    if not args.apply:
        _print("to switch the resource to it without restarting the VM, run:\n")
        _print("".join("  %s\n" % " ".join(c) for c in shown))
        return EXIT_OK
    if not args.resource:
        raise Fail("--apply needs --resource", EXIT_USAGE)
    for step, argv in enumerate(applied):
        # managing it again before the refresh (and its probes) would restart the VM: say
        # exactly what is left to run
        rest = "; ".join(" ".join(c) for c in shown[step:])
        try:
            r = bounded.command(argv, settle + 10 if "--wait" in argv else args.timeout)
        except (OSError, bounded.Timeout) as e:
            raise Fail("%s: %s; the resource may be left unmanaged: once the cluster is "
                       "calm, finish with: %s" % (" ".join(argv), e, rest))
        if r.rc != 0:
            raise Fail("%s failed (rc %d): %s; the resource may be left unmanaged: once "
                       "it is right, finish with: %s"
                       % (" ".join(argv), r.rc, (r.err or r.out).strip()[:300], rest))
        _print("done: %s\n" % " ".join(argv))
    _print("%s now uses %s\n" % (args.resource, ref.uri))
    return EXIT_OK
