"""Definitions kept in Ceph (vmceph.defstore, docs/definitions.md): names, validation,
compare-and-swap over a RADOS object's omap, the short history, the local copy, and the
agent reading ``config=ceph:POOL/NAME``.

The RADOS fake below keeps objects with an omap and applies a write operation the way an
OSD does (issue 14's oracle: "concurrent puts cannot silently overwrite each other"): the
whole operation or nothing; ``omap_cmp`` that does not hold cancels it with ECANCELED; an
exclusive create of an existing object fails with EEXIST. Exceptions are the real
``rados`` classes.
"""

import os
import stat
import threading

import pytest

rados = pytest.importorskip("rados", reason="Debian's python3-rados (run with /usr/bin/python3)")

from vmceph import defstore  # noqa: E402
from vmceph.defstore import (Conflict, DefRef, InvalidDefinition, Store,  # noqa: E402
                             check_definition, parse_uri, ref_of)

XML = """<domain type='kvm'>
  <name>%(name)s</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='MiB'>%(mem)d</memory>
  <vcpu>1</vcpu>
  <devices>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/%(name)s-d0'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def xml(name="vm1", mem=256):
    return (XML % {"name": name, "mem": mem}).encode()


REF = DefRef("rbd", None, "vm1")


# ------------------------------------------------------------------ a RADOS fake

class _Op:
    def __init__(self):
        self.steps = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    # WriteOp
    def new(self, exclusive=None):
        self.steps.append(("new", exclusive))

    def omap_cmp(self, key, val, cmp_op=rados.LIBRADOS_CMPXATTR_OP_EQ):
        self.steps.append(("cmp", key, val, cmp_op))


class FakeRadosModule:
    """What RadosBackend uses of the ``rados`` module."""
    Error = rados.Error
    ObjectNotFound = rados.ObjectNotFound
    ObjectExists = rados.ObjectExists
    PermissionError = rados.PermissionError
    PermissionDeniedError = rados.PermissionDeniedError
    LIBRADOS_CREATE_EXCLUSIVE = rados.LIBRADOS_CREATE_EXCLUSIVE
    LIBRADOS_CMPXATTR_OP_EQ = rados.LIBRADOS_CMPXATTR_OP_EQ
    ReadOpCtx = _Op
    WriteOpCtx = _Op


class FakeIoctx:
    def __init__(self, store, pool):
        self.store, self.pool, self.ns = store, pool, ""

    def set_namespace(self, ns):
        self.ns = ns

    def close(self):
        pass

    def _obj(self, oid):
        return self.store.objects.get((self.pool, self.ns, oid))

    def get_omap_vals_by_keys(self, op, keys):
        op.steps.append(("get_keys", tuple(keys)))
        out = []
        op.result = out
        return out, 0

    def get_omap_vals(self, op, start_after, prefix, max_return):
        op.steps.append(("get_prefix", prefix, max_return))
        out = []
        op.result = out
        return out, 0

    def operate_read_op(self, op, oid):
        obj = self._obj(oid)
        if obj is None:
            raise rados.ObjectNotFound("Failed to operate read op for oid %s" % oid, errno=2)
        for step in op.steps:
            if step[0] == "get_keys":
                op.result.extend((k, obj[k]) for k in step[1] if k in obj)
            elif step[0] == "get_prefix":
                op.result.extend(sorted((k, v) for k, v in obj.items()
                                        if k.startswith(step[1]))[:step[2]])

    def set_omap(self, op, keys, values):
        op.steps.append(("set", dict(zip(keys, values))))

    def remove_omap_keys(self, op, keys):
        op.steps.append(("rm", tuple(keys)))

    def operate_write_op(self, op, oid, mtime=0, flags=0):
        with self.store.lock:               # an OSD applies one op of an object at a time
            key = (self.pool, self.ns, oid)
            obj = self.store.objects.get(key)
            new = dict(obj or {})
            for step in op.steps:            # preconditions first, then all or nothing
                if step[0] == "new" and step[1] == rados.LIBRADOS_CREATE_EXCLUSIVE \
                        and obj is not None:
                    raise rados.ObjectExists("Failed to operate write op for oid %s" % oid,
                                             errno=17)
                if step[0] == "cmp":
                    if obj is None:
                        raise rados.ObjectNotFound("no object %s" % oid, errno=2)
                    have = obj.get(step[1])
                    if have is None or have.decode() != step[2]:
                        raise rados.OSError("Failed to operate write op for oid %s" % oid,
                                            errno=125)
            for step in op.steps:
                if step[0] == "set":
                    new.update(step[1])
                elif step[0] == "rm":
                    for k in step[1]:
                        new.pop(k, None)
            self.store.objects[key] = new
            self.store.writes += 1


class FakeCluster:
    def __init__(self):
        self.objects = {}
        self.lock = threading.Lock()
        self.writes = 0
        self.pools = {"rbd"}

    def open_ioctx(self, pool):
        if pool not in self.pools:
            raise rados.ObjectNotFound("pool %s" % pool, errno=2)
        return FakeIoctx(self, pool)


class FakeSession:
    OSD_OP_CAP = 15.0

    def __init__(self, cluster=None):
        self.rados = FakeRadosModule
        self.cluster = cluster or FakeCluster()
        self.abandoned = []
        self.user = "vmceph"

    def _left(self, cap):
        return cap

    # what defstore.fetch uses
    def connect(self):
        pass

    def close(self):
        pass


def store(session=None):
    return Store(session or FakeSession(), "rbd")


def no_schema(data):
    return None


# ------------------------------------------------------------------ names

def test_uri_forms():
    r = parse_uri("ceph:rbd/vm1")
    assert (r.pool, r.namespace, r.name, r.oid) == ("rbd", None, "vm1", "vmceph.domain.vm1")
    r = parse_uri("ceph:rbd/tenant1/vm1")
    assert (r.pool, r.namespace, r.name) == ("rbd", "tenant1", "vm1")
    assert r.uri == "ceph:rbd/tenant1/vm1"
    assert parse_uri("/etc/vmceph/domains/vm1.xml") is None


@pytest.mark.parametrize("bad", ["ceph:", "ceph:rbd", "ceph:rbd/", "ceph:/vm1", "ceph:a/b/c/d",
                                 "ceph:rbd/vm 1", "ceph:rbd/..", "ceph:rbd/vm1\n",
                                 "ceph:rbd/" + "x" * 201])
def test_malformed_uris_are_refused(bad):
    with pytest.raises(ValueError):
        parse_uri(bad)


def test_ref_of_a_name_needs_a_pool():
    assert ref_of("vm1", pool="rbd").uri == "ceph:rbd/vm1"
    assert ref_of("vm1", pool="rbd", namespace="t").uri == "ceph:rbd/t/vm1"
    assert ref_of("ceph:p/vm2", pool="rbd").uri == "ceph:p/vm2"
    with pytest.raises(ValueError, match="needs a pool"):
        ref_of("vm1")


# ------------------------------------------------------------------ validation

def test_valid_definition_parses():
    dom = check_definition(REF, xml(), no_schema)
    assert dom.name == "vm1" and dom.rbd_disks[0].spec == "rbd/vm1-d0"


def test_definition_of_another_domain_is_refused():
    with pytest.raises(InvalidDefinition, match="named 'vm2', not 'vm1'"):
        check_definition(REF, xml("vm2"), no_schema)


def test_doctype_and_entities_are_refused():
    bomb = b"<!DOCTYPE d [<!ENTITY a 'aaaa'>]><domain><name>vm1</name></domain>"
    with pytest.raises(InvalidDefinition, match="DOCTYPE"):
        check_definition(REF, bomb, no_schema)


def test_too_large_is_refused():
    big = xml().replace(b"<vcpu>", b"<!--" + b"x" * defstore.MAX_DEF_BYTES + b"--><vcpu>")
    with pytest.raises(InvalidDefinition, match="more than"):
        check_definition(REF, big, no_schema)


def test_invalid_uuid_is_refused():
    with pytest.raises(InvalidDefinition, match="UUID"):
        check_definition(REF, xml().replace(b"4dea22b3-", b"nothex-"), no_schema)


def test_schema_complaint_is_refused_with_its_reason():
    with pytest.raises(InvalidDefinition, match="libvirt's schema: Element vcpu failed"):
        check_definition(REF, xml(), lambda d: "Element vcpu failed")


def test_virt_xml_validate_when_installed():
    import shutil
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("VIRT-XML-VALIDATE NOT INSTALLED: the schema check is untested here")
    assert defstore.virt_xml_validate(xml()) is None
    assert defstore.virt_xml_validate(xml().replace(b"<vcpu>1</vcpu>",
                                                    b"<vcpu>one</vcpu>")) is not None


# ------------------------------------------------------------------ compare-and-swap

def test_first_put_then_next_versions():
    s = store()
    e1 = s.put(REF, xml(), 0, who="a@n1", validator=no_schema)
    e2 = s.put(REF, xml(mem=512), 1, who="b@n2", comment="more memory", validator=no_schema)
    assert (e1["version"], e2["version"]) == (1, 2)
    cur = s.current("vm1")
    assert cur["version"] == 2 and cur["who"] == "b@n2" and cur["comment"] == "more memory"
    assert "512" in cur["xml"]
    assert s.version("vm1", 1)["xml"] == xml().decode()


def test_two_puts_from_the_same_version_one_wins_the_other_is_told():
    s = store()
    s.put(REF, xml(), 0, who="a@n1", validator=no_schema)
    s.put(REF, xml(mem=512), 1, who="b@n2", validator=no_schema)
    with pytest.raises(Conflict) as ei:
        s.put(REF, xml(mem=1024), 1, who="c@n3", validator=no_schema)
    msg = str(ei.value)
    assert "version 2 was stored by b@n2" in msg and "NOT stored" in msg
    assert s.current("vm1")["who"] == "b@n2"           # the winner is untouched
    assert "1024" not in s.current("vm1")["xml"]


def test_two_first_puts_one_wins():
    s = store()
    s.put(REF, xml(), 0, who="a@n1", validator=no_schema)
    with pytest.raises(Conflict):
        s.put(REF, xml(mem=999), 0, who="b@n2", validator=no_schema)
    assert s.current("vm1")["who"] == "a@n1"


def _concurrent_puts():
    s = store()
    s.put(REF, xml(), 0, who="a", validator=no_schema)
    results = []

    def put(k):
        try:
            s.put(REF, xml(mem=300 + k), 1, who="w%d" % k, validator=no_schema)
            results.append("won")
        except Conflict:
            results.append("told")
    threads = [threading.Thread(target=put, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results), s.current("vm1")["version"]


def test_concurrent_puts_in_threads_exactly_one_wins():
    """Run in a child process: lxml parsing in threads that have exited leaves libxml2 so
    that libvirt's in-process test driver, parsing its node XML in another thread (as
    test_disks does), crashes the interpreter (SIGSEGV in 4 of 10 runs of a 20-line
    reproducer: 8 threads parse with lxml, then libvirt.open('test:///node.xml') in a
    thread). The agents parse with lxml in the main thread only."""
    import json
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(r)
        try:
            os.write(w, json.dumps(_concurrent_puts()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        answer = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    results, version = json.loads(answer)
    assert results == ["told"] * 7 + ["won"]
    assert version == 2


def test_the_write_carries_its_precondition():
    """The RADOS operation itself checks the version (not a read before it): a put whose
    read was right but lost the race to the OSD must still be cancelled."""
    session = FakeSession()
    s = store(session)
    s.put(REF, xml(), 0, who="a", validator=no_schema)
    # another writer slips in directly at the OSD, after any read this put could make
    key = ("rbd", "", "vmceph.domain.vm1")
    session.cluster.objects[key]["version"] = b"0000000002"
    with pytest.raises(Conflict):
        s.put(REF, xml(mem=512), 1, who="b", validator=no_schema)


def test_an_invalid_definition_is_not_stored():
    session = FakeSession()
    s = store(session)
    with pytest.raises(InvalidDefinition):
        s.put(REF, xml("other"), 0, validator=no_schema)
    assert session.cluster.writes == 0 and s.current("vm1") is None


def test_history_keeps_the_last_versions():
    s = store()
    for v in range(1, 15):
        s.put(REF, xml(mem=100 + v), v - 1, who="u%d" % v, validator=no_schema)
    hist = s.history("vm1")
    assert [e["version"] for e in hist] == list(range(15 - defstore.HISTORY, 15))
    assert s.version("vm1", 3) is None
    lines = defstore.log_lines(hist)
    assert lines[0].startswith("v14") and "u14" in lines[0] and "+1 -1" in lines[0]


def test_write_plan_drops_exactly_the_oldest():
    e = defstore.make_entry(12, "<x/>", "a", "t")
    sets, drop = defstore.write_plan(11, e)
    assert set(sets) == {"version", "current", "v.0000000012"}
    assert drop == ["v.%010d" % (12 - defstore.HISTORY)]
    assert defstore.write_plan(0, defstore.make_entry(1, "<x/>", "a", "t"))[1] == []


def test_missing_pool_is_unavailable():
    s = Store(FakeSession(), "nopool")
    with pytest.raises(defstore.Unavailable, match="pool nopool does not exist"):
        s.current("vm1")


def test_diff_shows_the_change():
    d = defstore.diff(xml().decode(), xml(mem=512).decode(), "v1", "v2")
    assert "-  <memory unit='MiB'>256</memory>" in d and "+  <memory unit='MiB'>512</memory>" in d
    assert defstore.diff("a\n", "a\n", "x", "y") == ""


# ------------------------------------------------------------------ the local copy

def test_local_copy_in_the_state_directory(tmp_path):
    env = {"HA_RSCTMP": str(tmp_path)}
    assert defstore.cache_read(env, REF) is None
    path = defstore.cache_write(env, REF, xml())
    assert path.startswith(str(tmp_path) + "/vmceph-definitions/")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert defstore.cache_read(env, REF) == xml()
    defstore.cache_write(env, REF, xml(mem=512))
    assert defstore.cache_read(env, REF) == xml(mem=512)
    other = DefRef("rbd", "t", "vm1")
    assert defstore.cache_path(env, other) != defstore.cache_path(env, REF)
    assert defstore.cache_path(env, DefRef("a_b", None, "c")) != \
        defstore.cache_path(env, DefRef("a", "b", "c"))


def test_fetch_reads_the_current_version():
    cluster = FakeCluster()
    Store(FakeSession(cluster), "rbd").put(REF, xml(mem=777), 0, validator=no_schema)

    class Deadline:
        def remaining(self):
            return 30.0
    data, entry = defstore.fetch(REF, "/etc/ceph/ceph.conf", "vmceph", "", Deadline(),
                                 session_cls=lambda *a: FakeSession(cluster))
    assert b"777" in data and entry["version"] == 1
    with pytest.raises(defstore.NotFound):
        defstore.fetch(DefRef("rbd", None, "vm9"), "/c", None, None, Deadline(),
                       session_cls=lambda *a: FakeSession(cluster))


# ------------------------------------------------------------------ the agent reads it

from test_agent_flows import World  # noqa: E402  (the agent on fake libvirt and Ceph)
import fakes  # noqa: E402


class DefsWorld:
    """World (tests/unit/test_agent_flows.py) with the definition of vm1 in a RADOS fake
    instead of a file; ``reachable`` False makes Ceph unreachable for the definition."""

    def __init__(self, tmp_path, monkeypatch):
        self.w = World(tmp_path, monkeypatch)
        self.cluster = FakeCluster()
        self.reachable = True
        real_fetch = defstore.fetch

        def fetch(ref, conf, user, keyring, deadline, log=None, session_cls=None):
            if not self.reachable:
                raise defstore.Unavailable("no Ceph monitor answered within 10 s")
            return real_fetch(ref, conf, user, keyring, deadline, log,
                              session_cls=lambda *a: FakeSession(self.cluster))
        monkeypatch.setattr(defstore, "fetch", fetch)
        self.store = Store(FakeSession(self.cluster), "rbd")
        self.w.config.unlink()                     # no file anywhere: only Ceph has it
        self.w.params["config"] = "ceph:rbd/vm1"

    def put(self, data, expect):
        return self.store.put(REF, data, expect, who="admin@n1", validator=no_schema)


@pytest.fixture
def d(tmp_path, monkeypatch):
    world = DefsWorld(tmp_path, monkeypatch)
    yield world
    world.w.close()


def state_file(d):
    return d.w.tmp / "rsctmp" / "vmceph-RBDVirtualDomain-vm1.state"


def test_start_uses_the_definition_in_ceph_and_keeps_a_copy(d):
    d.put(fakes.domain_xml(), 0)
    assert d.w.run("validate-all") == 0, d.w.err
    assert d.w.start() == 0, d.w.err
    assert d.w.node1.guest("vm1").xml == fakes.domain_xml()
    copy = defstore.cache_read({"HA_RSCTMP": str(d.w.tmp / "rsctmp")}, REF)
    assert copy == fakes.domain_xml().encode()
    assert "definition ceph:rbd/vm1: version 1 (stored by admin@n1" in d.w.logfile.read_text()


def test_probe_monitor_and_stop_with_ceph_unreachable_use_the_local_copy(d):
    d.put(fakes.domain_xml(), 0)
    assert d.w.start() == 0, d.w.err
    d.reachable = False
    state_file(d).unlink()              # not even the remembered identity: the copy only
    assert d.w.run("monitor") == 0, d.w.err                       # probe
    assert d.w.run("monitor", interval=10000) == 0, d.w.err
    assert d.w.run("stop") == 0, d.w.err
    assert not d.w.node1.running("vm1")
    assert d.w.run("monitor") == ocf_not_running()


def test_probe_without_copy_or_state_is_not_running(d):
    d.put(fakes.domain_xml(), 0)
    d.reachable = False
    assert d.w.run("monitor") == ocf_not_running(), d.w.err
    assert d.w.run("stop") == 0, d.w.err


def test_start_with_ceph_unreachable_fails_and_says_why(d):
    d.put(fakes.domain_xml(), 0)
    d.reachable = False
    assert d.w.start() == 1
    assert "definition ceph:rbd/vm1 cannot be read from Ceph" in d.w.reason
    assert not d.w.node1.called("createXML")


def test_start_without_definition_says_how_to_store_one(d):
    assert d.w.start() != 0
    assert "no definition ceph:rbd/vm1" in d.w.reason and "vmceph config put" in d.w.reason
    assert not d.w.node1.called("createXML")


def test_a_change_applies_at_the_next_start(d):
    d.put(fakes.domain_xml(), 0)
    assert d.w.start() == 0, d.w.err
    changed = fakes.domain_xml().replace("<vcpu>2</vcpu>", "<vcpu>3</vcpu>")
    assert changed != fakes.domain_xml()
    d.put(changed, 1)
    assert d.w.node1.guest("vm1").xml == fakes.domain_xml()     # running: unchanged
    assert d.w.run("stop") == 0, d.w.err
    assert d.w.start() == 0, d.w.err
    assert d.w.node1.guest("vm1").xml == changed


def test_a_definition_of_another_domain_is_not_started(d):
    # written past `vmceph config put` (e.g. with the rados tool): the agent checks too
    import json
    e = defstore.make_entry(1, fakes.domain_xml(name="vm2"), "x", "t")
    d.cluster.objects[("rbd", "", "vmceph.domain.vm1")] = {
        "version": b"0000000001", "current": json.dumps(e).encode()}
    assert d.w.start() != 0
    assert "named 'vm2', not 'vm1'" in d.w.reason
    assert not d.w.node1.called("createXML")


def test_malformed_uri_is_a_configuration_error(d):
    assert d.w.run("validate-all", {"config": "ceph:rbd"}) == 6
    assert "ceph:POOL/NAME" in d.w.reason


def test_save_config_on_stop_never_writes_a_file_named_like_the_uri(d, monkeypatch):
    d.put(fakes.domain_xml(), 0)
    assert d.w.start(save_config_on_stop="true") == 0, d.w.err
    monkeypatch.chdir(d.w.tmp)
    assert d.w.run("stop", {"save_config_on_stop": "true"}) == 0, d.w.err
    assert not (d.w.tmp / "ceph:rbd").exists()
    assert "not written back" in d.w.logfile.read_text()


def ocf_not_running():
    from vmceph import ocf
    return ocf.OCF_NOT_RUNNING


# ------------------------------------------------------------------ vmceph config

@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    from vmceph import cli as cli_mod, configcmd
    cluster = FakeCluster()

    class Opened:
        def __init__(self, args, ref):
            self.ref = ref

        def __enter__(self):
            return Store(FakeSession(cluster), self.ref.pool, self.ref.namespace)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(configcmd, "_Opened", Opened)
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon_host = 10.252.0.1\n")

    def run(*argv):
        rc = cli_mod.main(list(argv) + ["--ceph-conf", str(conf)])
        out, err = capsys.readouterr()
        return rc, out, err
    run.tmp = tmp_path
    run.cluster = cluster
    return run


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_cli_put_get_log_diff(cli):
    f1 = write(cli.tmp, "a.xml", xml())
    f2 = write(cli.tmp, "b.xml", xml(mem=512))
    assert cli("config", "put", "ceph:rbd/vm1", f1, "-m", "first")[:2] == (
        0, "ceph:rbd/vm1: version 1 stored\n")
    assert cli("config", "put", "vm1", f1, "--pool", "rbd")[1] == \
        "ceph:rbd/vm1: unchanged (version 1)\n"
    assert cli("config", "put", "vm1", f2, "--pool", "rbd", "-m", "more memory")[0] == 0
    rc, out, _ = cli("config", "get", "ceph:rbd/vm1")
    assert rc == 0 and out == xml(mem=512).decode()
    assert cli("config", "get", "ceph:rbd/vm1", "--version", "1")[1] == xml().decode()
    rc, out, _ = cli("config", "log", "ceph:rbd/vm1")
    lines = out.splitlines()
    assert lines[0].startswith("v2") and "more memory" in lines[0]
    assert lines[1].startswith("v1") and "first" in lines[1]
    rc, out, _ = cli("config", "diff", "ceph:rbd/vm1")
    assert "+  <memory unit='MiB'>512</memory>" in out and "v1" in out and "v2" in out


def test_cli_stale_put_is_told_and_exits_3(cli):
    f1 = write(cli.tmp, "a.xml", xml())
    f2 = write(cli.tmp, "b.xml", xml(mem=512))
    assert cli("config", "put", "ceph:rbd/vm1", f1)[0] == 0
    assert cli("config", "put", "ceph:rbd/vm1", f2, "--expect-version", "1")[0] == 0
    rc, out, err = cli("config", "put", "ceph:rbd/vm1", f1, "--expect-version", "1")
    assert rc == 3 and "changed meanwhile" in err and "NOT stored" in err


def test_cli_refuses_an_invalid_definition(cli):
    f = write(cli.tmp, "x.xml", xml("vm2"))
    rc, _, err = cli("config", "put", "ceph:rbd/vm1", f)
    assert rc == 1 and "named 'vm2'" in err
    assert cli.cluster.writes == 0


def test_cli_edit_applies_the_editor_result(cli, monkeypatch):
    f1 = write(cli.tmp, "a.xml", xml())
    cli("config", "put", "ceph:rbd/vm1", f1)
    script = cli.tmp / "ed.sh"
    script.write_text("#!/bin/sh\nsed -i 's/256/384/' \"$1\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(script))
    rc, out, err = cli("config", "edit", "ceph:rbd/vm1")
    assert rc == 0, err
    assert "version 2 stored" in out
    assert "384" in cli("config", "get", "ceph:rbd/vm1")[1]


def test_cli_import_prints_the_switch_without_restart(cli):
    f1 = write(cli.tmp, "vm1.xml", xml())
    rc, out, err = cli("config", "import", f1, "--resource", "vm1-rsc", "--pool", "rbd")
    assert rc == 0, err
    assert "ceph:rbd/vm1: version 1 stored from" in out
    assert "pcs resource unmanage vm1-rsc" in out
    assert "pcs resource update vm1-rsc config=ceph:rbd/vm1" in out
    assert out.index("unmanage") < out.index("update") < out.index("--refresh") \
        < out.index("resource manage")
    # again: identical, nothing new stored; a different file is a conflict
    assert "already stored, identical" in cli("config", "import", f1, "--pool", "rbd")[1]
    f2 = write(cli.tmp, "vm1b.xml", xml(mem=999))
    assert cli("config", "import", f2, "--pool", "rbd")[0] == 3


def test_deep_monitor_without_local_copy_reads_ceph_and_keeps_it(d):
    """A resource switched to Ceph by 'vmceph config import --apply' has no copy on the
    node that runs it; its deep monitor talks to Ceph anyway, so it reads the definition
    there (a failure would make Pacemaker restart the VM the import meant to keep)."""
    d.put(fakes.domain_xml(), 0)
    assert d.w.start() == 0, d.w.err
    cache = defstore.cache_path({"HA_RSCTMP": str(d.w.tmp / "rsctmp")}, REF)
    os.unlink(cache)
    assert d.w.run("monitor", interval=10000) == 0, d.w.err       # depth 0: the state
    assert not os.path.exists(cache)                                # depth 0 reads no Ceph
    assert d.w.run("monitor", interval=10000, depth=20) == 0, d.w.err
    assert os.path.exists(cache)


def test_deep_monitor_without_local_copy_and_without_ceph_says_this_node_lacks_it(
        d, monkeypatch):
    d.put(fakes.domain_xml(), 0)
    assert d.w.start() == 0, d.w.err
    os.unlink(defstore.cache_path({"HA_RSCTMP": str(d.w.tmp / "rsctmp")}, REF))

    def unreachable(*a, **k):
        raise defstore.DefError("cannot connect to Ceph: timed out")
    monkeypatch.setattr(defstore, "fetch", unreachable)
    assert d.w.run("monitor", interval=10000, depth=20) == 5
    assert "this node has no local copy" in d.w.reason
