"""The Ceph adapter (lib/vmceph/ceph.py) against the fake rados/rbd modules.

The fakes raise the real exception classes and answer with the JSON shapes of Ceph 16.2.15;
see tests/unit/fakes.py.
"""

import json

import pytest

import fakes
from vmceph import ceph
from vmceph.ceph import (CephConfigError, CephPermission, CephSession, CephUnavailable,
                         split_spec)
from vmceph.rbdimages import image_facts
from vmceph.ocf import Deadline
from vmceph.safety import ImageFacts, Locker, Watcher


@pytest.fixture
def cluster():
    c = fakes.FakeCeph()
    c.add_image("rbd/vm1-root")
    c.add_image("rbd/tenant1/vm1-data")
    yield c
    c.close()


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "ceph.conf"
    path.write_text("[global]\nmon_host = 10.252.0.1,10.252.0.2,10.252.0.3\n")
    return str(path)


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def session(cluster, conf, deadline=None, **kw):
    return CephSession(conf, kw.pop("user", "vmceph"), kw.pop("keyring", None),
                       deadline if deadline is not None else Deadline(90),
                       rados_mod=cluster.rados, rbd_mod=cluster.rbd, **kw)


# ----------------------------------------------------------------------------- connect

def test_timeouts_set_as_ceph_config_from_a_long_deadline(cluster, conf):
    with session(cluster, conf, Deadline(90)):
        pass
    r = cluster.sessions[-1]
    assert r.conf["client_mount_timeout"] == "30"      # capped: MOUNT_CAP
    assert r.conf["rados_mon_op_timeout"] == "10"
    assert r.conf["rados_osd_op_timeout"] == "15"
    assert r.conf["admin_socket"] == "" and r.conf["log_to_stderr"] == "false"
    assert r.rados_id == "vmceph" and r.conffile == conf
    assert r.state == "shutdown"                       # closed by the context manager


def test_timeouts_follow_what_is_left_of_a_short_deadline(cluster, conf):
    d = Deadline(8, margin_s=0)
    with session(cluster, conf, d):
        pass
    c = cluster.sessions[-1].conf
    for key in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
        assert 1 <= int(c[key]) <= 8, key


def test_keyring_and_default_user(cluster, conf, tmp_path):
    kr = tmp_path / "keyring"
    kr.write_text("[client.admin]\n")
    s = CephSession(conf, "", str(kr), Deadline(30), rados_mod=cluster.rados,
                    rbd_mod=cluster.rbd)
    s.connect()
    r = cluster.sessions[-1]
    assert r.rados_id is None and r.conf["keyring"] == str(kr)
    s.close()


def test_no_time_left_means_unavailable_without_calling_ceph(cluster, conf):
    clock = _Clock()
    d = Deadline(10, margin_s=0, clock=clock)
    clock.t += 9.9
    with pytest.raises(CephUnavailable, match="no time left"):
        session(cluster, conf, d).connect()
    assert cluster.sessions == []


def test_connect_without_quorum_is_unavailable(cluster, conf):
    cluster.lose_quorum()
    with pytest.raises(CephUnavailable) as e:
        session(cluster, conf).connect()
    assert "no Ceph monitor quorum reachable within 30 s" in str(e.value)


def test_connect_refused_credentials_is_permission(cluster, conf):
    cluster.auth_ok = False
    with pytest.raises(CephPermission, match="client.vmceph"):
        session(cluster, conf).connect()


def test_missing_conffile_is_config_error(cluster, tmp_path):
    with pytest.raises(CephConfigError, match="not found"):
        session(cluster, str(tmp_path / "nope.conf")).connect()


def test_close_is_idempotent_and_closes_only_what_it_opened(cluster, conf):
    s = session(cluster, conf)
    s.close()                                          # never opened: nothing to do
    s.connect()
    s.close()
    s.close()
    assert [r.state for r in cluster.sessions] == ["shutdown"]


# ----------------------------------------------------------------------------- monitors

def test_quorum_ok(cluster, conf):
    with session(cluster, conf) as s:
        ok, detail, names, mons = s.quorum()
    assert ok and names == mons == ["node1", "node2", "node3"]
    assert detail == "quorum node1,node2,node3 of node1,node2,node3"
    assert cluster.commands[-1] == {"prefix": "quorum_status", "format": "json"}


def test_quorum_two_of_three_is_enough(cluster, conf):
    cluster.lose_quorum(survivors=("node1", "node3"))
    with session(cluster, conf) as s:
        ok, detail, names, _ = s.quorum()
    assert ok and names == ["node1", "node3"]


def test_quorum_lost_after_connect(cluster, conf):
    """An already connected client: quorum_status times out (-110) while health still
    answers a stale HEALTH_OK (docs/ceph-facts.md): quorum must be checked explicitly."""
    with session(cluster, conf) as s:
        cluster.lose_quorum()
        ok, detail, names, mons = s.quorum()
        assert s.health()["status"] == "HEALTH_OK"
    assert not ok and names == [] and mons == []
    assert "timed out" in detail and "after" in detail


def test_quorum_answer_with_a_minority(cluster, conf, monkeypatch):
    with session(cluster, conf) as s:
        monkeypatch.setattr(s, "mon", lambda prefix, **kw: {
            "quorum_names": ["node1"], "monmap": {"mons": [{"name": "node1"}, {"name": "node2"},
                                                           {"name": "node3"}]}})
        ok, detail, _, _ = s.quorum()
    assert not ok and detail == "monitor quorum lost: 1 of 3 monitors in quorum (node1)"


@pytest.mark.parametrize("ret,err,exc", [
    (-110, "timed out", CephUnavailable), (-13, "access denied", CephPermission),
    (-1, "operation not permitted", CephPermission), (-22, "command not known", CephUnavailable),
    (-2, "no such pool", CephUnavailable)])
def test_error_codes_become_domain_errors(ret, err, exc):
    with pytest.raises(exc) as e:
        CephSession._answer("osd blocklist", ret, b"", err)
    assert "osd blocklist" in str(e.value)


def test_monitor_access_denied_is_permission(cluster, conf):
    cluster.caps = "none"
    with session(cluster, conf) as s:
        with pytest.raises(CephPermission, match="Ceph refused 'quorum_status': access denied"):
            s.quorum()
        with pytest.raises(CephPermission):
            s.blocklist_add("10.252.0.2:0/1", 600)


def test_answer_parses_json_and_keeps_the_rest():
    assert CephSession._answer("x", 0, b'{"a": 1}', "") == {"a": 1}
    assert CephSession._answer("x", 0, b"", "done") is None
    assert CephSession._answer("x", 0, b"[1][2]", "") == "[1][2]"


def test_health_summary(cluster, conf):
    cluster.health = fakes.health_warn_osd_down()
    with session(cluster, conf) as s:
        h = s.health()
    assert h == {"status": "HEALTH_WARN", "checks": {
        "OSD_DOWN": {"severity": "HEALTH_WARN", "summary": "1 osds down", "count": 1,
                     "detail": ["osd.2 (root=default,host=node3) is down"]},
        "OSD_HOST_DOWN": {"severity": "HEALTH_WARN", "summary": "1 host (1 osds) down",
                          "count": 1, "detail": ["host node3 (root=default) (1 osds) is down"]}}}
    assert cluster.commands[-1] == {"prefix": "health", "detail": "detail", "format": "json"}


def test_mon_command_hanging_is_bounded(cluster, conf):
    clock = _Clock()
    with session(cluster, conf, Deadline(10, margin_s=0, clock=clock)) as s:
        clock.t += 9.7                   # 0.3 s left: bounded.call waits 1.3 s at most
        cluster.hang_mon.set()
        with pytest.raises(CephUnavailable, match="did not answer 'quorum_status'"):
            s.mon("quorum_status")
        cluster.release.set()


def test_pool_ids(cluster, conf):
    """From the monitors ('osd lspools'), never the manager (issue 13: no mgr caps)."""
    cluster.add_image("other/x")
    cluster.mgr_up = False
    with session(cluster, conf) as s:
        assert s.pool_ids() == {"rbd": 2, "other": 3}
    assert cluster.commands[-1] == {"prefix": "osd lspools", "format": "json"}


@pytest.mark.parametrize("raw,ips", [
    ("v2:10.252.0.1:0/3154213287", ["10.252.0.1"]),
    ("10.252.0.1:0/3154213287", ["10.252.0.1"]),
    ("[v2:10.252.0.1:0/1,v1:10.252.0.1:0/1]", ["10.252.0.1"]),
    ("[v2:10.252.0.1:0/1,v2:10.253.0.1:0/1]", ["10.252.0.1", "10.253.0.1"]),
    ("v2:0.0.0.0:0/0", []),
    ("v2:[fd00::1]:0/77", ["fd00::1"])])
def test_client_addrs_shapes(cluster, conf, raw, ips):
    with session(cluster, conf) as s:
        s.cluster.get_addrs = lambda: raw
        assert s.client_addrs() == ips


def test_client_addrs_of_the_real_session(cluster, conf):
    with session(cluster, conf) as s:
        assert s.client_addrs() == ["10.252.0.1"]


# ----------------------------------------------------------------------------- images

def test_inspect_unlocked_image(cluster, conf):
    with session(cluster, conf) as s:
        f = s.inspect("rbd/vm1-root")
    assert f == ImageFacts("rbd/vm1-root")


def test_inspect_returns_lockers_and_watchers_read_only(cluster, conf):
    qemu = cluster.qemu_writes("rbd/vm1-root", "10.252.0.2")
    with session(cluster, conf) as s:
        f = s.inspect("rbd/vm1-root")
        # a read-only handle registers no watch: we never appear as a writer
        assert len(cluster.image("rbd/vm1-root").watchers) == 1
    cookie = cluster.image("rbd/vm1-root").watchers[0]["cookie"]
    assert f.lock_tag == "internal"
    assert f.lockers == (Locker(qemu.entity, "auto %d" % cookie, qemu.addr),)
    assert f.watchers == (Watcher(qemu.addr, qemu.gid, cookie),)
    assert f.lockers[0].watch_cookie == f.watchers[0].cookie


def test_inspect_image_in_a_namespace(cluster, conf):
    qemu = cluster.qemu_writes("rbd/tenant1/vm1-data", "10.252.0.3", lock=False)
    with session(cluster, conf) as s:
        f = s.inspect("rbd/tenant1/vm1-data")
    assert f.spec == "rbd/tenant1/vm1-data" and f.lockers == ()
    assert [w.addr for w in f.watchers] == [qemu.addr]


def test_inspect_missing_image(cluster, conf):
    with session(cluster, conf) as s:
        f = s.inspect("rbd/nope")
    assert f == ImageFacts("rbd/nope", exists=False)


def test_inspect_missing_pool(cluster, conf):
    with session(cluster, conf) as s:
        f = s.inspect("nopool/vm1")
    assert not f.exists and "Ceph pool nopool does not exist" in f.error


def test_inspect_permission_denied(cluster, conf):
    cluster.deny_pool("rbd")
    with session(cluster, conf) as s:
        f = s.inspect("rbd/vm1-root")
    assert f.permission_denied and f.exists


def test_inspect_closes_its_ioctx(cluster, conf, monkeypatch):
    opened = []
    real_open = fakes.Rados.open_ioctx

    def spy(self, name):
        io = real_open(self, name)
        opened.append(io)
        return io
    monkeypatch.setattr(fakes.Rados, "open_ioctx", spy)
    with session(cluster, conf) as s:
        s.inspect("rbd/vm1-root")
        s.inspect("rbd/nope")
    assert len(opened) == 2 and all(io.state == "closed" for io in opened)


def test_read_only_open_closes_what_it_opened_when_the_body_fails(cluster, conf, monkeypatch):
    opened, images = [], []
    real_open = fakes.Rados.open_ioctx
    real_image = cluster.rbd.Image

    def spy(self, name):
        io = real_open(self, name)
        opened.append(io)
        return io

    def image(*a, **kw):
        img = real_image(*a, **kw)
        images.append(img)
        return img
    monkeypatch.setattr(fakes.Rados, "open_ioctx", spy)
    monkeypatch.setattr(cluster.rbd, "Image", image)
    with session(cluster, conf) as s:
        with pytest.raises(RuntimeError):
            with s.images.read_only("rbd", None, "vm1-root") as img:
                assert img.read_only
                raise RuntimeError("the body failed")
        with pytest.raises(cluster.rbd.ImageNotFound):     # the open itself fails
            with s.images.read_only("rbd", None, "nope"):
                pass
    assert len(opened) == 2 and all(io.state == "closed" for io in opened)
    assert len(images) == 1 and images[0].closed


def test_image_facts_from_raw_answers():
    f = image_facts("rbd/a", {"tag": "internal", "exclusive": True,
                              "lockers": [("client.4235", "auto 94823928102912",
                                           "10.252.0.1:0/3154213287")]},
                    [{"addr": "10.252.0.1:0/3154213287", "id": 4235,
                      "cookie": 94823928102912}])
    assert f.lockers[0].watch_cookie == 94823928102912 == f.watchers[0].cookie
    assert f.watchers[0].entity == "client.4235"
    assert image_facts("rbd/a", [], []) == ImageFacts("rbd/a")


@pytest.mark.parametrize("spec,parts", [("rbd/a", ("rbd", None, "a")),
                                        ("rbd/ns/a", ("rbd", "ns", "a"))])
def test_split_spec(spec, parts):
    assert split_spec(spec) == parts


@pytest.mark.parametrize("spec", ["a", "rbd/", "/a", "a/b/c/d", "rbd//a"])
def test_split_spec_errors(spec):
    with pytest.raises(ValueError):
        split_spec(spec)


# ----------------------------------------------------------------------------- blocklist

def test_blocklist_add_with_expiry(cluster, conf):
    with session(cluster, conf) as s:
        s.blocklist_add("10.252.0.2:0/3154213287", 600)
    assert cluster.commands[-1] == {"prefix": "osd blocklist", "blocklistop": "add",
                                    "addr": "10.252.0.2:0/3154213287", "expire": 600.0}
    assert cluster.is_blocklisted("10.252.0.2:0/3154213287")


def test_blocklist_host_is_librados_call_with_the_host_entry(cluster, conf):
    """fence_vmceph's host-wide entry through rados_blocklist_add (integer seconds: the
    fake raises TypeError for a float, as python3-rados 16.2.15 does); the instance-only
    guard of blocklist_add stays for the resource agents."""
    with session(cluster, conf) as s:
        s.blocklist_host("10.252.0.3", 315360000)
        with pytest.raises(ValueError, match="not one client instance"):
            s.blocklist_add("10.252.0.3:0/0", 600)
    assert cluster.commands[-1] == {"prefix": "osd blocklist", "blocklistop": "add",
                                    "addr": "10.252.0.3:0/0", "expire": 315360000.0}
    assert cluster.is_blocklisted("10.252.0.3:0/0")


def test_blocklist_add_without_quorum_fails(cluster, conf):
    with session(cluster, conf) as s:
        cluster.lose_quorum()
        with pytest.raises(CephUnavailable, match="timed out"):
            s.blocklist_add("10.252.0.2:0/1", 600)
    assert cluster.blocklist == {}


def test_blocklist_ls_parses_two_arrays_back_to_back(cluster, conf):
    with session(cluster, conf) as s:
        s.blocklist_add("10.252.0.2:0/11", 600)
        s.blocklist_add("10.252.0.3:0/12", 600)
        raw = s.mon("osd blocklist ls")
        entries = s.blocklist_ls()
    with pytest.raises(ValueError):
        json.loads(raw)                       # what a naive parser would trip on
    assert sorted(entries) == ["10.252.0.2:0/11", "10.252.0.3:0/12"]


def test_blocklist_ls_parses_ranges_and_empty():
    s = CephSession("/x")
    s.mon = lambda *a, **k: ('[{"addr":"10.0.0.2:0/1","until":"2026-11-26T02:00:00.0+0000"}]\n'
                             '[{"range":"10.0.1.0:0/24","until":"2026-11-26T02:00:00.0+0000"}]')
    assert s.blocklist_ls() == ["10.0.0.2:0/1"]
    s.mon = lambda *a, **k: "[][]"
    assert s.blocklist_ls() == []
    s.mon = lambda *a, **k: [{"addr": "10.0.0.9:0/9"}]
    assert s.blocklist_ls() == ["10.0.0.9:0/9"]


def test_break_lock_uses_a_read_write_handle(cluster, conf, monkeypatch):
    qemu = cluster.qemu_writes("rbd/vm1-root", "10.252.0.2")
    handles = []
    real_init = fakes.Image.__init__

    def spy(self, ioctx, name=None, snapshot=None, read_only=False, image_id=None,
            _oncomplete=None):
        real_init(self, ioctx, name, snapshot, read_only, image_id, _oncomplete)
        handles.append(self)
    monkeypatch.setattr(fakes.Image, "__init__", spy)
    with session(cluster, conf) as s:
        s.blocklist_add(qemu.addr, 600)
        lk = s.inspect("rbd/vm1-root").lockers[0]
        assert s.break_lock("rbd/vm1-root", lk) is True
    img = cluster.image("rbd/vm1-root")
    assert [h.read_only for h in handles] == [True, False]
    assert img.lock_breaks == [(0, qemu.addr)] and img.lockers == []
    # our read-write handle was open only for the break: its watch is gone again (and the
    # blocklisted QEMU's went with its entry)
    assert img.watchers == []


def test_break_lock_when_already_gone(cluster, conf):
    with session(cluster, conf) as s:
        assert s.break_lock("rbd/vm1-root", Locker("client.1", "auto 1", "10.0.0.9:0/1")) is False
        assert s.break_lock("rbd/nope", Locker("client.1", "auto 1", "10.0.0.9:0/1")) is False


def test_break_lock_of_another_owner_is_left_alone(cluster, conf):
    qemu = cluster.qemu_writes("rbd/vm1-root", "10.252.0.2")
    with session(cluster, conf) as s:
        assert s.break_lock("rbd/vm1-root", Locker("client.1", "auto 1", "10.0.0.9:0/1")) is False
    assert cluster.image("rbd/vm1-root").lockers[0][0] == qemu.entity


def test_break_lock_permission(cluster, conf):
    cluster.qemu_writes("rbd/vm1-root", "10.252.0.2")
    cluster.deny_pool("rbd")
    with session(cluster, conf) as s:
        with pytest.raises(CephPermission, match="may not break the lock on rbd/vm1-root"):
            s.break_lock("rbd/vm1-root", Locker("client.1", "auto 1", "10.0.0.9:0/1"))


def test_break_lock_missing_pool(cluster, conf):
    with session(cluster, conf) as s:
        with pytest.raises(CephConfigError, match="pool nopool does not exist"):
            s.break_lock("nopool/a", Locker("client.1", "auto 1", "10.0.0.9:0/1"))


def test_module_constants_match_errno():
    import errno
    assert (ceph.ETIMEDOUT, ceph.EACCES, ceph.EPERM, ceph.ENOENT) == (
        errno.ETIMEDOUT, errno.EACCES, errno.EPERM, errno.ENOENT)
