"""The fakes themselves, checked against the real modules : same
method names and signatures, the real exception classes and constants, and the same
answers where the real library can be asked without a cluster (librados before connect or
against a monitor that is not there; libvirt's in-process test:///default driver)."""

import inspect
import json
import subprocess
import sys
import textwrap

import pytest

import fakes
from fakes import real_libvirt, real_rados, real_rbd
from vmceph import virt

API = [(fakes.Rados, real_rados.Rados), (fakes.Ioctx, real_rados.Ioctx),
       (fakes.Image, real_rbd.Image), (fakes.RBD, real_rbd.RBD),
       (fakes.Connection, real_libvirt.virConnect), (fakes.Domain, real_libvirt.virDomain)]


@pytest.mark.parametrize("fake,real", API, ids=[f.__name__ for f, _ in API])
def test_every_fake_method_exists_on_the_real_class(fake, real):
    methods = fakes.public_methods(fake)
    assert methods, fake
    missing = [m for m in methods if not callable(getattr(real, m, None))]
    assert missing == []


@pytest.mark.parametrize("fake,real", API, ids=[f.__name__ for f, _ in API])
def test_fake_signatures_match_the_real_ones(fake, real):
    """Same parameter names, in the same order, optional where the real one is optional,
    wherever the binding exposes a signature (Cython's docstrings give the defaults)."""
    checked = 0
    for name in fakes.public_methods(fake):
        real_sig = fakes.real_signature(real, name)
        if real_sig is None:
            continue
        fake_fn = inspect.unwrap(getattr(fake, name))
        fake_sig = inspect.signature(fake_fn)
        rp, fp = list(real_sig.parameters.values()), list(fake_sig.parameters.values())
        assert [p.name for p in fp] == [p.name for p in rp], (name, fake_sig, real_sig)
        assert [p.default is p.empty for p in fp] == [p.default is p.empty for p in rp], (
            name, fake_sig, real_sig)
        checked += 1
    if real is not real_rbd.Image:              # rbd.Image's wrappers hide every signature
        assert checked == len(fakes.public_methods(fake))


def test_image_constructor_matches_the_documented_one():
    doc = real_rbd.Image.__doc__.strip().splitlines()[0]
    params = list(inspect.signature(fakes.Image.__init__).parameters)[1:]
    assert doc == "Image(%s)" % ", ".join(
        "%s=%s" % (p, inspect.signature(fakes.Image.__init__).parameters[p].default)
        if inspect.signature(fakes.Image.__init__).parameters[p].default is not
        inspect.Parameter.empty else p for p in params)


def test_mirrors_refuses_an_invented_method():
    with pytest.raises(TypeError, match="does not exist on the real"):
        @fakes.mirrors(real_libvirt.virDomain)
        class Bad:
            def shutdownGracefully(self):
                pass


def test_calls_are_checked_against_the_real_signature():
    host = fakes.FakeLibvirt("n")
    host.add_guest("vm1")
    dom = host.module.open("qemu:///system").lookupByName("vm1")
    with pytest.raises(TypeError, match="virDomain.shutdownFlags"):
        dom.shutdownFlags(1, 2)
    with pytest.raises(TypeError):
        dom.migrateToURI3("qemu://x/system")             # params is required
    with pytest.raises(AttributeError):
        dom.shutdownflags(0)                              # misspelt: no such method


@pytest.mark.parametrize("real,fake_mod", [(real_rados, "rados"), (real_rbd, "rbd")])
def test_fake_modules_raise_the_real_exception_classes(real, fake_mod):
    mod = getattr(fakes.FakeCeph(), fake_mod)
    classes = {k: v for k, v in vars(real).items()
               if isinstance(v, type) and issubclass(v, BaseException)}
    assert len(classes) > 15
    for name, cls in classes.items():
        assert getattr(mod, name) is cls, name


def test_fake_modules_carry_the_real_constants():
    c = fakes.FakeCeph()
    assert c.rbd.RBD_LOCK_MODE_EXCLUSIVE == real_rbd.RBD_LOCK_MODE_EXCLUSIVE
    lv = fakes.FakeLibvirt("n").module
    for name in ("VIR_ERR_NO_DOMAIN", "VIR_FROM_REMOTE", "VIR_FROM_RPC", "VIR_MIGRATE_LIVE",
                 "VIR_DOMAIN_SHUTDOWN_GUEST_AGENT", "VIR_MIGRATE_PARAM_URI",
                 "VIR_DOMAIN_JOB_STATS_COMPLETED", "VIR_DOMAIN_DESTROY_GRACEFUL",
                 "VIR_DOMAIN_XML_SECURE", "VIR_DOMAIN_XML_INACTIVE"):
        assert getattr(lv, name) == getattr(real_libvirt, name)
    assert lv.libvirtError is real_libvirt.libvirtError


def test_libvirt_error_is_built_like_the_real_one():
    e = fakes.libvirt_error(real_libvirt.VIR_ERR_NO_DOMAIN, real_libvirt.VIR_FROM_QEMU,
                            "Domain not found: no domain with matching name 'vm1'")
    assert type(e) is real_libvirt.libvirtError
    assert (e.get_error_code(), e.get_error_domain()) == (42, 10)
    assert e.get_error_message() == str(e) == "Domain not found: no domain with matching name 'vm1'"
    assert e.get_error_level() == real_libvirt.VIR_ERR_ERROR
    assert isinstance(virt.classify(e, "lookup"), virt.DomainNotFound)


@pytest.mark.parametrize("code,domain,kind", [
    (42, 10, virt.DomainNotFound),
    (38, 7, virt.LibvirtUnreachable),          # Failed to connect socket / Cannot recv data
    (1, 7, virt.LibvirtUnreachable),           # internal error from the RPC layer
    (1, 13, virt.LibvirtUnreachable),          # VIR_FROM_REMOTE
    (68, 10, virt.LibvirtUnreachable),         # cannot acquire state change lock
    (55, 20, virt.VirtOperationFailed),        # domain is not running
    (86, 10, virt.VirtOperationFailed),        # guest agent not connected
    (78, 10, virt.VirtOperationFailed)])       # migration canceled by client
def test_classify_by_code_and_domain(code, domain, kind):
    assert type(virt.classify(fakes.libvirt_error(code, domain, "x"), "op")) is kind


# ----------------------------------------------------------------------------- vs librados

REAL_RADOS_PROBES = textwrap.dedent("""
    import json, sys, rados
    conf = sys.argv[1]
    out = {}
    def probe(name, fn):
        try:
            fn()
            out[name] = None
        except BaseException as e:
            out[name] = [type(e).__module__ + "." + type(e).__name__, str(e)]
    probe("missing_conffile", lambda: rados.Rados(conffile="/nonexistent/ceph.conf"))
    probe("both_ids", lambda: rados.Rados(conffile=conf, rados_id="a", name="client.b"))
    probe("conf_int", lambda: rados.Rados(conffile=conf, conf={"client_mount_timeout": 5}))
    r = rados.Rados(conffile=conf, rados_id="vmceph",
                    conf={"client_mount_timeout": "1", "admin_socket": ""})
    probe("conf_unknown", lambda: r.conf_set("client_mount_timout", "5"))
    probe("mon_before_connect", lambda: r.mon_command(json.dumps({"prefix": "health"}), b""))
    probe("open_ioctx_before_connect", lambda: r.open_ioctx("rbd"))
    probe("connect_no_monitor", lambda: r.connect())
    out["state_after_failed_connect"] = r.state
    r.shutdown()
    out["state_after_shutdown"] = r.state
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def real_rados_answers(tmp_path_factory):
    """The real librados, in a child process (it can crash), against a monitor address
    nobody listens on: what it raises before and at connect (about 1 s)."""
    conf = tmp_path_factory.mktemp("rados") / "ceph.conf"
    conf.write_text("[global]\nmon_host = 127.0.0.1:1\n")
    r = subprocess.run([sys.executable, "-c", REAL_RADOS_PROBES, str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), str(conf)


def _fake_probe(fn):
    try:
        fn()
        return None
    except BaseException as e:
        return [type(e).__module__ + "." + type(e).__name__, str(e)]


def test_fake_rados_answers_like_the_real_one(real_rados_answers):
    real, conf = real_rados_answers
    ceph = fakes.FakeCeph()
    ceph.lose_quorum(survivors=())                 # no monitor answers
    R = ceph.rados.Rados
    fake = {
        "missing_conffile": _fake_probe(lambda: R(conffile="/nonexistent/ceph.conf")),
        "both_ids": _fake_probe(lambda: R(conffile=conf, rados_id="a", name="client.b")),
        "conf_int": _fake_probe(lambda: R(conffile=conf, conf={"client_mount_timeout": 5})),
    }
    r = R(conffile=conf, rados_id="vmceph", conf={"client_mount_timeout": "1",
                                                  "admin_socket": ""})
    fake["conf_unknown"] = _fake_probe(lambda: r.conf_set("client_mount_timout", "5"))
    fake["mon_before_connect"] = _fake_probe(
        lambda: r.mon_command(json.dumps({"prefix": "health"}), b""))
    fake["open_ioctx_before_connect"] = _fake_probe(lambda: r.open_ioctx("rbd"))
    fake["connect_no_monitor"] = _fake_probe(r.connect)
    fake["state_after_failed_connect"] = r.state
    r.shutdown()
    fake["state_after_shutdown"] = r.state
    for key in fake:
        if isinstance(real[key], list):
            # same class; the same message, except Python's own TypeError wording
            assert fake[key][0] == real[key][0], key
            if real[key][0] != "builtins.TypeError":
                assert fake[key][1] == real[key][1], key
        else:
            assert fake[key] == real[key], key
    assert real["connect_no_monitor"][0] == "rados.TimedOut"


def test_fake_refuses_waits_the_real_library_would_make_unbounded():
    ceph = fakes.FakeCeph()
    ceph.lose_quorum()
    r = ceph.rados.Rados(conffile=None, conf={})
    with pytest.raises(AssertionError, match="would block 300 s"):
        r.connect()
    ceph.restore_quorum()
    r.connect()
    ceph.lose_quorum()
    with pytest.raises(AssertionError, match="would block forever"):
        r.mon_command(json.dumps({"prefix": "quorum_status"}), b"")


def test_fake_mon_commands():
    ceph = fakes.FakeCeph()
    r = ceph.rados.Rados(conf={"rados_mon_op_timeout": "5", "client_mount_timeout": "5"})
    r.connect()

    def mon(**cmd):
        return r.mon_command(json.dumps(cmd), b"")
    ret, out, _ = mon(prefix="quorum_status", format="json")
    q = json.loads(out)
    assert ret == 0 and q["quorum_names"] == ["node1", "node2", "node3"]
    assert [m["name"] for m in q["monmap"]["mons"]] == q["quorum_names"]
    assert mon(prefix="osd blocklist", blocklistop="add", addr="10.0.0.9", expire=60.0)[0] == 0
    assert "10.0.0.9:0/0" in ceph.blocklist                 # a bare IP: every client
    ret, out, outs = mon(prefix="osd blocklist ls", format="json")
    assert out.startswith(b"[{") and out.endswith(b"][]") and outs == "listed 1 entries"
    # 'ls' is a command of its own: a real 16.2.15 monitor refuses it as a blocklistop
    assert mon(prefix="osd blocklist", blocklistop="ls", format="json")[0] == -22
    assert mon(prefix="osd blocklist", blocklistop="add", addr="not an address")[0] == -22
    ceph.caps = "rbd"                                       # profile rbd may not remove
    assert mon(prefix="osd blocklist", blocklistop="rm", addr="10.0.0.9:0/0") == (
        -13, b"", "access denied")
    assert mon(prefix="no such thing")[0] == -22
    ceph.lose_quorum()
    assert mon(prefix="quorum_status") == (-110, b"", "timed out")
    assert json.loads(mon(prefix="health")[1])["status"] == "HEALTH_OK"     # stale
    assert json.loads(mon(prefix="status")[1])["quorum_names"] == []
    with pytest.raises(TypeError):
        r.mon_command(json.dumps({"prefix": "health"}), "")                 # inbuf: bytes


def test_fake_images_behave_like_librbd():
    ceph = fakes.FakeCeph()
    ceph.add_image("rbd/img").snapshots.add("snap1")
    qemu = ceph.qemu_writes("rbd/img", "10.252.0.2")
    r = ceph.rados.Rados(conf={})
    r.connect()
    io = r.open_ioctx("rbd")
    img_state = ceph.image("rbd/img")
    with ceph.rbd.Image(io, "img", read_only=True) as ro:
        assert len(img_state.watchers) == 1                 # read-only: no watch of ours
        lk = ro.list_lockers()
        assert lk == {"tag": "internal", "exclusive": True, "lockers": [
            (qemu.entity, "auto %d" % img_state.watchers[0]["cookie"], qemu.addr)]}
        with pytest.raises(real_rbd.InvalidArgument):
            ro.lock_get_owners()
        with pytest.raises(real_rbd.ReadOnlyImage):
            ro.lock_break(real_rbd.RBD_LOCK_MODE_EXCLUSIVE, qemu.entity)
    with pytest.raises(real_rbd.InvalidArgument):
        ro.list_lockers()                                   # closed handle
    with ceph.rbd.Image(io, "img", snapshot="snap1") as snap:
        assert snap.read_only
    with pytest.raises(real_rbd.ImageNotFound):
        ceph.rbd.Image(io, "img", snapshot="nosnap")
    with pytest.raises(real_rbd.ImageNotFound):
        ceph.rbd.Image(io, "missing")
    with ceph.rbd.Image(io, "img") as rw:
        assert len(img_state.watchers) == 2                 # read-write: we watch it too
        assert list(rw.lock_get_owners()) == [{"mode": real_rbd.RBD_LOCK_MODE_EXCLUSIVE,
                                               "owner": qemu.addr}]
        with pytest.raises(real_rbd.ImageBusy):
            rw.lock_break(real_rbd.RBD_LOCK_MODE_EXCLUSIVE, "client.1")
        rw.lock_break(real_rbd.RBD_LOCK_MODE_EXCLUSIVE, qemu.addr)
    assert img_state.lockers == [] and ceph.is_blocklisted(qemu.addr)
    # the OSDs drop a blocklisted client's watch with the map carrying its entry (lab,
    # Ceph 16.2.15: gone 1.07 s after 'ceph osd blocklist add'), not at the watch timeout
    assert img_state.watchers == []
    with pytest.raises(real_rados.ObjectNotFound):
        r.open_ioctx("nopool")


# ----------------------------------------------------------------------------- vs libvirt

@pytest.fixture
def real_test_driver():
    real_libvirt.registerErrorHandler(lambda *a: None, None)
    conn = real_libvirt.open("test:///default")
    yield conn
    conn.close()
    real_libvirt.registerErrorHandler(None, None)


def _err(fn):
    try:
        fn()
    except real_libvirt.libvirtError as e:
        return e.get_error_code(), e.get_error_message()
    return None


XML = ("<domain type='test'><name>vm1</name><uuid>8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d</uuid>"
       "<memory>65536</memory><os><type>hvm</type></os></domain>")


def test_fake_libvirt_errors_match_the_test_driver(real_test_driver):
    """Error codes and messages of the operations the agent relies on, real vs fake
    (the test driver reports VIR_FROM_TEST where QEMU would report its own domain)."""
    host = fakes.FakeLibvirt("node1")
    fake_conn = host.module.open("qemu:///system")
    for conn in (real_test_driver, fake_conn):
        conn.createXML(XML, 0)
    pairs = []
    for conn in (real_test_driver, fake_conn):
        dom = conn.lookupByName("vm1")
        got = {
            "lookup_missing": _err(lambda: conn.lookupByName("nope"))[0],
            "create_active": _err(lambda: conn.createXML(XML, 0)),
            "create_uuid_clash": _err(lambda: conn.createXML(XML.replace("8a5b", "9a5b"), 0)),
            "direct_migration": _err(lambda: dom.migrateToURI3("qemu://node2/system", {},
                                                               real_libvirt.VIR_MIGRATE_LIVE)),
            "destroy": dom.destroyFlags(0),
            "gone_after_destroy": _err(dom.state)[0],
            "lookup_after_destroy": _err(lambda: conn.lookupByName("vm1"))[0],
        }
        pairs.append(got)
    real, fake = pairs
    assert fake == real
    assert real["create_active"][0] == real_libvirt.VIR_ERR_OPERATION_INVALID
    assert real["gone_after_destroy"] == real_libvirt.VIR_ERR_NO_DOMAIN


def test_fake_inactive_domain_errors_match_the_test_driver(real_test_driver):
    host = fakes.FakeLibvirt("node1")
    host.add_guest("vm1", uuid="8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", running=False,
                   persistent=True)
    real_dom = real_test_driver.defineXML(XML)
    fake_dom = host.module.open("qemu:///system").lookupByName("vm1")
    for dom in (real_dom, fake_dom):
        assert (dom.isActive(), dom.isPersistent()) == (0, 1)
    assert _err(lambda: fake_dom.destroyFlags(0)) == _err(lambda: real_dom.destroyFlags(0))
    assert fake_dom.undefine() == real_dom.undefine() == 0


def test_fake_guest_lifecycle():
    host = fakes.FakeLibvirt("node1")
    conn = host.module.open("qemu:///system")
    dom = conn.createXML(fakes.domain_xml(), 0)
    g = host.guest("vm1")
    assert dom.state() == [real_libvirt.VIR_DOMAIN_RUNNING, real_libvirt.VIR_DOMAIN_RUNNING_BOOTED]
    dom.shutdownFlags(0)
    assert dom.isActive() == 0 and host.guest("vm1") is None    # transient: gone
    assert _err(dom.state)[0] == real_libvirt.VIR_ERR_NO_DOMAIN
    dom = conn.createXML(fakes.domain_xml(), 0)
    g = host.guest("vm1")
    g.acpi = "ignore"
    dom.shutdownFlags(0)
    assert dom.isActive() == 1                                  # ignored, like a guest w/o OS
    assert _err(lambda: dom.shutdownFlags(real_libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT))[0] == \
        real_libvirt.VIR_ERR_AGENT_UNRESPONSIVE
    assert _err(dom.abortJob)[0] == real_libvirt.VIR_ERR_OPERATION_INVALID
    assert dom.jobStats() == {"type": real_libvirt.VIR_DOMAIN_JOB_NONE}
    host.reachable = False
    assert _err(dom.state)[0] == real_libvirt.VIR_ERR_SYSTEM_ERROR
    e = None
    try:
        host.module.open("qemu:///system")
    except real_libvirt.libvirtError as exc:
        e = exc
    assert (e.get_error_code(), e.get_error_domain()) == (real_libvirt.VIR_ERR_SYSTEM_ERROR,
                                                          real_libvirt.VIR_FROM_RPC)
    assert isinstance(virt.classify(e, "connect"), virt.LibvirtUnreachable)


def test_fake_migration_moves_the_guest_and_blocks_until_aborted():
    import threading
    hosts = {}
    src, dst = fakes.FakeLibvirt("node1", hosts), fakes.FakeLibvirt("node2", hosts)
    dom = src.module.open("qemu:///system").createXML(fakes.domain_xml(), 0)
    flags = real_libvirt.VIR_MIGRATE_LIVE | real_libvirt.VIR_MIGRATE_PEER2PEER
    with pytest.raises(real_libvirt.libvirtError, match="unable to connect to server"):
        dom.migrateToURI3("qemu://node3/system", {}, flags)
    with pytest.raises(real_libvirt.libvirtError, match="unsupported parameter"):
        dom.migrateToURI3("qemu://node2/system", {"speed": 5}, flags)
    src.migration = "block"
    box = {}
    t = threading.Thread(target=lambda: box.update(e=_err(
        lambda: dom.migrateToURI3("qemu://node2/system", {}, flags))))
    t.start()
    while src.guest("vm1").job is None:
        pass
    assert dom.jobStats()["memory_remaining"] > 0
    dom.migrateSetMaxDowntime(300, 0)
    dom.abortJob()
    t.join(5)
    assert box["e"][0] == real_libvirt.VIR_ERR_OPERATION_ABORTED
    assert src.running("vm1") and not dst.running("vm1")
    src.migration = "complete"
    assert dom.migrateToURI3("qemu://node2/system", {real_libvirt.VIR_MIGRATE_PARAM_URI:
                                                     "tcp://node2-mig"}, flags) == 0
    assert dst.running("vm1") and not src.running("vm1")
    assert dst.module.open("qemu:///system").lookupByName("vm1").jobStats(
        real_libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)["downtime"] == 19


def test_stub_bin_records_arguments_with_spaces_and_hashes(tmp_path, monkeypatch):
    stubs = fakes.StubBin(tmp_path / "bin", monkeypatch)
    stubs.add("attrd_updater", "echo done")
    r = subprocess.run(["attrd_updater", "-n", "#health-ceph", "-U", "10.0.0.1 10.0.0.2"],
                       capture_output=True, text=True)
    assert r.stdout == "done\n"
    assert stubs.calls() == [["attrd_updater", "-n", "#health-ceph", "-U", "10.0.0.1 10.0.0.2"]]
