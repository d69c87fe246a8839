"""Issue 16, in process: the pieces that make every input answered (strict types, output
that cannot be cut or forged, state files that cannot crash an action, the timeout's
default, the CLI's argument checks). The same reproducers run as whole processes in
tests/fuzz/test_reproducers.py."""

import errno
import fcntl
import io
import os
import stat

import pytest

from vmceph import cli, ocf
from vmceph.inputs import ceph_conf_problem, libvirt_uuid
from vmceph.rbdvd import RBDVirtualDomain, recall, remember, Identity
from vmceph.cephhealth import CephHealth


# ----------------------------------------------------------------------------- UUIDs

# what libvirt's test driver answered to createXML with each <uuid> (virUUIDParse)
@pytest.mark.parametrize("text,canonical", [
    ("c7a5fdbd-cdaf-9455-926a-d65c16db1809", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"),
    ("c7a5fdbdcdaf9455926ad65c16db1809", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"),
    ("C7A5FDBDCDAF9455926AD65C16DB1809", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"),
    ("c7a5-fdbd-cdaf-9455-926a-d65c16db18-09", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"),
    (" c7a5fdbdcdaf9455926ad65c16db1809 \n", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"),
    ("-c7a5fdbdcdaf9455926ad65c16db1809", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"),
    ("xyz", None), ("", None), (None, None),
    ("c7a5fdbdcdaf9455926ad65c16db180", None),          # 31 digits
    ("c7a5fdbdcdaf9455926ad65c16db18099", None),        # 33 digits
    ("c7a5fdbdcdaf9455926ad65c16db1809-", None),        # trailing dash
    ("c7a5fdbdcdaf9455926ad65c16db18g9", None),
])
def test_libvirt_uuid_follows_libvirt(text, canonical):
    assert libvirt_uuid(text) == canonical


def test_identity_never_carries_an_invalid_uuid():
    assert Identity("vm1", "xyz").uuid is None
    assert Identity("vm1", "C7A5FDBDCDAF9455926AD65C16DB1809").uuid == \
        "c7a5fdbd-cdaf-9455-926a-d65c16db1809"


# ----------------------------------------------------------------------------- ceph.conf

@pytest.mark.parametrize("content,kind", [
    (b"[global]\nmon_host = 10.0.0.1\n", None),
    (b"", None),
    (b"\x00\xff\xfe binary", "invalid"),
    (b"root:x:0:0:root:/root:/bin/bash\n", "invalid"),
    (b"[global]\n$include /etc/other.conf\n", "invalid"),
])
def test_ceph_conf_parsed_by_librados(tmp_path, content, kind):
    pytest.importorskip("rados")
    import rados
    f = tmp_path / "ceph.conf"
    f.write_bytes(content)
    problem = ceph_conf_problem(str(f), rados_mod=rados)
    assert (problem[0] if problem else None) == kind


# ----------------------------------------------------------------------------- output

@pytest.mark.parametrize("text,shown", [
    ("plain", "plain"),
    ("a\nocf-exit-reason:forged", "a\\nocf-exit-reason:forged"),
    ("cr\rlf", "cr\\rlf"),
    ("tab\t", "tab\\t"),
    ("esc\x1b[31m", "esc\\x1b[31m"),
    ("nonutf8\udcff\udcfe", "nonutf8\\xff\\xfe"),
    ("line\u2028sep", "line\\u2028sep"),
    ("caf\u00e9 \u263a", "caf\u00e9 \u263a"),
])
def test_escape_keeps_every_value_on_its_line(text, shown):
    assert ocf.escape(text) == shown


def test_log_escapes_values_and_reason_is_last_line():
    class Agent:
        spec = RBDVirtualDomain.spec

        def validate(self, ctx):
            ctx.log.info("domain %s", "evil\nocf-exit-reason:all is well")
            raise ocf.GenericError("reason with\na newline")

        def start(self, ctx):
            return ocf.OCF_SUCCESS

    err = io.StringIO()
    rc = ocf.run(Agent(), ["x", "start"], {"HA_debug": "1"}, io.StringIO(), err)
    lines = err.getvalue().splitlines()
    assert rc == 1
    assert [ln for ln in lines if ln.startswith("ocf-exit-reason:")] == [lines[-1]]
    assert lines[-1] == "ocf-exit-reason:reason with a newline"


def test_failure_without_exception_still_has_a_reason():
    class Agent:
        spec = RBDVirtualDomain.spec

        def validate(self, ctx):
            pass

        def start(self, ctx):
            return ocf.OCF_ERR_GENERIC

    err = io.StringIO()
    assert ocf.run(Agent(), ["x", "start"], {}, io.StringIO(), err) == 1
    assert err.getvalue().splitlines()[-1].startswith("ocf-exit-reason:")


def test_fd_writer_clears_o_nonblock_and_writes_everything():
    r, w = os.pipe()
    fl = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, fl | os.O_NONBLOCK)  # what librados does to stderr
    data = "x" * 200000  # three times a pipe buffer
    import threading
    got = []
    t = threading.Thread(target=lambda: got.append(_read_all(r)))
    t.start()
    ocf.FdWriter(w).write(data + "\n")
    os.close(w)
    t.join(10)
    assert got == [(data + "\n").encode()]
    os.close(r)


def _read_all(fd):
    out = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return out
        out += chunk


def test_fd_writer_on_a_closed_descriptor_is_silent():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    ocf.FdWriter(w).write("nobody listens\n")  # EBADF: no exception


@pytest.mark.parametrize("kind", ["fifo", "dir", "devnull", "missing_dir"])
def test_log_file_that_is_not_regular_is_ignored_with_a_warning(tmp_path, kind):
    path = {"fifo": tmp_path / "fifo", "dir": tmp_path, "devnull": "/dev/null",
            "missing_dir": tmp_path / "no" / "log"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    s = io.StringIO()
    log = ocf.Log("T", {"HA_LOGFILE": str(path), "HA_DEBUGLOG": str(path), "HA_debug": "1"}, s)
    log.info("first")   # would block forever on a FIFO opened for writing
    log.debug("second")
    out = s.getvalue()
    assert "INFO: first" in out and "DEBUG: second" in out
    assert out.count("not logging to it") == 1


def test_open_append_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f")
    fd, why = ocf.open_append(str(tmp_path / "f"))
    assert fd is None and "FIFO" in why


def test_closed_standard_streams_are_reopened(tmp_path):
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, %r); from vmceph import ocf, rbdvd; "
            "sys.exit(ocf.run(rbdvd.RBDVirtualDomain(), ['x', 'meta-data']))"
            % os.path.join(os.path.dirname(ocf.__file__), ".."))
    for redirect in ({"stdout": subprocess.DEVNULL}, {}):
        # close fd 1 (and 2) in the child before Python starts
        r = subprocess.run([sys.executable, "-c", "import os; os.close(1); os.close(2); "
                            "os.execv(%r, [%r, '-c', %r])" % (sys.executable, sys.executable,
                                                              code)],
                           timeout=30, **redirect)
        assert r.returncode == 0


# ----------------------------------------------------------------------------- timeout

@pytest.mark.parametrize("raw,seconds,noted", [
    ("5000", 5.0, False),
    ("1", 0.001, False),
    (str(2 ** 31 - 1), (2 ** 31 - 1) / 1000.0, False),
    (None, 90.0, True), ("", 90.0, True), ("abc", 90.0, True), ("0", 90.0, True),
    ("-5000", 90.0, True), ("20s", 90.0, True), ("1e3", 90.0, True), (" 5000", 90.0, True),
    ("\uff15\uff10\uff10\uff10", 90.0, True), (str(2 ** 31), 90.0, True),
    ("10" + "0" * 11, 90.0, True), ("9" * 400, 90.0, True),
])
def test_timeout_default_is_the_advertised_one_and_logged(raw, seconds, noted):
    env = {} if raw is None else {"OCF_RESKEY_CRM_meta_timeout": raw}
    d = ocf.deadline_from_env(env, 90.0)
    assert d.timeout == pytest.approx(seconds)
    assert bool(d.note) == noted


# ----------------------------------------------------------------------------- interval/depth

@pytest.mark.parametrize("env,rc", [
    ({"OCF_RESKEY_CRM_meta_interval": "abc"}, 6),   # was silently a probe
    ({"OCF_RESKEY_CRM_meta_interval": "10000", "OCF_CHECK_LEVEL": "x"}, 6),  # was depth 0
    ({"OCF_RESKEY_CRM_meta_interval": "0", "OCF_CHECK_LEVEL": "x"}, 7),  # a probe answers
])
def test_unparsable_interval_or_depth_is_not_guessed(tmp_path, env, rc):
    env = dict(env, HA_RSCTMP=str(tmp_path), OCF_RESKEY_config=str(tmp_path / "none.xml"))
    err = io.StringIO()
    assert ocf.run(RBDVirtualDomain(), ["x", "monitor"], env, io.StringIO(), err) == rc


# ----------------------------------------------------------------------------- state files

class _Ctx:
    def __init__(self, env, instance="vm1"):
        self.env = env
        self.instance = instance
        self.log = ocf.Log("T", {}, io.StringIO())

    @property
    def state_dir(self):
        return ocf.state_dirs(self.env)[0]


@pytest.mark.parametrize("instance", ["vm1", "a/b", "x" * 100000, "caf\u00e9" * 200,
                                      "bad\udcffbytes"])
def test_state_file_names_fit_any_file_system(instance):
    name = ocf.state_file_name("vmceph-RBDVirtualDomain-", instance, ".state")
    assert len(os.fsencode(name)) <= 255 and "/" not in name
    if len(instance) < 50 and "/" not in instance:
        assert instance in name  # short names stay readable and unchanged


def test_state_survives_rsctmp_naming_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ocf, "STATE_DIR_FALLBACK", str(tmp_path / "fallback"))
    f = tmp_path / "afile"
    f.write_text("")
    ctx = _Ctx({"HA_RSCTMP": str(f)})
    assert remember(ctx, Identity("vm1", None, "/etc/vm1.xml"))
    assert recall(ctx).name == "vm1"
    assert list((tmp_path / "fallback").iterdir())


def test_state_absence_is_survivable(tmp_path, monkeypatch):
    monkeypatch.setattr(ocf, "STATE_DIR_FALLBACK", "/dev/null/cannot")
    ctx = _Ctx({"HA_RSCTMP": "/dev/null"})
    assert remember(ctx, Identity("vm1")) is False
    assert recall(ctx) is None
    ocf.remove_state(ctx, "anything")


def test_remembered_values_with_newlines_come_back_whole(tmp_path):
    ctx = _Ctx({"HA_RSCTMP": str(tmp_path)})
    remember(ctx, Identity("vm\nname=evil", None, "/etc/x%0A.xml"))
    got = recall(ctx)
    assert (got.name, got.config) == ("vm\nname=evil", "/etc/x%0A.xml")


def test_cephhealth_stop_with_rsctmp_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ocf, "STATE_DIR_FALLBACK", str(tmp_path / "fallback"))
    f = tmp_path / "afile"
    f.write_text("")
    env = {"HA_RSCTMP": str(f), "OCF_RESOURCE_INSTANCE": "h" * 100000, "PATH": "/nonexistent"}
    err = io.StringIO()
    assert ocf.run(CephHealth(), ["CephHealth", "stop"], env, io.StringIO(), err) == 0
    assert "Traceback" not in err.getvalue()


# ----------------------------------------------------------------------------- node checks

def test_regular_file_check_names_the_kind(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    cases = {str(tmp_path / "fifo"): "a FIFO", str(tmp_path): "a directory",
             "/dev/null": "a character device", str(tmp_path / "dangling"): "dangling",
             str(tmp_path / "missing"): "does not exist", str(tmp_path / "loop"): "symbolic",
             "/etc/passwd/x": "Not a directory"}
    for path, words in cases.items():
        with pytest.raises(ocf.NotHere, match=words):
            ocf.regular_file(path)
    with pytest.raises(ValueError, match="too long"):
        ocf.regular_file("/" + "a" * 5000)


def test_snapshot_must_be_a_directory_or_absent(tmp_path):
    (tmp_path / "file").write_text("")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    ocf.directory_or_absent(str(tmp_path))
    ocf.directory_or_absent(str(tmp_path / "new" / "deeper"))
    for bad in ("file", "fifo", "dangling"):
        with pytest.raises(ocf.NotHere):
            ocf.directory_or_absent(str(tmp_path / bad))
    with pytest.raises(ocf.NotHere):
        ocf.directory_or_absent(str(tmp_path / "file" / "sub"))
    with pytest.raises(ocf.NotHere):
        ocf.directory_or_absent("/dev/null")


def test_executables(tmp_path):
    prog = tmp_path / "check"
    prog.write_text("#!/bin/sh\nexit 0\n")
    noexec = tmp_path / "noexec"
    noexec.write_text("")
    prog.chmod(0o755)
    ocf.executables("%s true" % prog, path_env="/usr/bin:/bin")
    with pytest.raises(ValueError, match="absolute"):
        ocf.executables("./check")
    with pytest.raises(ocf.NotHere, match="not executable"):
        ocf.executables(str(noexec))
    with pytest.raises(ocf.NotHere, match="not in PATH"):
        ocf.executables("no-such-program-here", path_env="/usr/bin")


@pytest.mark.parametrize("uri,ok", [
    ("qemu:///system", True), ("test:///default", True), ("qemu+ssh://n1/system", True),
    ("qemu+tls://%n/system", True), ("qemu+ext:///system?command=/bin/sh", False),
    ("qemu+bogus:///system", False), ("qemu", False), ("://x", False),
    ("qemu:///sys tem", False),
])
def test_libvirt_uri_transport_rule(uri, ok):
    if ok:
        ocf.libvirt_uri(uri)
    else:
        with pytest.raises(ValueError):
            ocf.libvirt_uri(uri)
    ocf.libvirt_uri("qemu+ext:///system?command=/bin/true", allow_ext=True)


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "-inf", "1e999", "x", "3601"])
def test_cli_timeout_refused(timeout, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["check", "--image", "rbd/a", "--timeout", timeout])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_paths_refused_cleanly(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for argv in (["check", "--image", "rbd/a", "--ceph-conf", str(tmp_path / "fifo")],
                 ["check", "--image", "rbd/a", "--ceph-keyring", str(tmp_path / "fifo")],
                 ["disks", str(tmp_path / "fifo")],
                 ["disks", "/" + "a" * 5000],
                 ["disks", str(tmp_path / "loop")],
                 ["disks", "/etc/passwd/x"]):
        assert cli.main(argv) == 2, argv
        assert capsys.readouterr().err.startswith("vmceph: ")


def test_cli_non_utf8_user_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["check", "--image", "rbd/a", "--ceph-user", "\udcff\udcfe"])
    assert e.value.code == 2
    assert "not valid UTF-8" in capsys.readouterr().err


def test_errno_names_used_in_messages_exist():
    # the messages rely on strerror for ELOOP/ENOTDIR (no errno module names shown)
    assert os.strerror(errno.ELOOP) and stat.S_ISFIFO


@pytest.mark.parametrize("env,uri", [
    ({"OCF_RESKEY_hypervisor": "test:///default"}, "test:///default"),
    ({"OCF_RESKEY_hypervisor": "test:///default",
      "OCF_RESKEY_remoteuri": "qemu+ext://%n/system?command=/bin/true"}, "test:///default"),
    ({"OCF_RESKEY_hypervisor": "qemu+ext:///system?command=/bin/true"}, "qemu:///system"),
    ({"OCF_RESKEY_hypervisor": "qemu+ext:///system?command=/bin/true",
      "OCF_RESKEY_allow_ext_transport": "true"}, "qemu+ext:///system?command=/bin/true"),
    ({"OCF_RESKEY_hypervisor": "test:///def\udcffault"}, "qemu:///system"),
    ({}, "qemu:///system"),
])
def test_stop_connects_to_the_configured_uri_only_when_it_is_safe(env, uri, monkeypatch):
    from vmceph import virt
    from vmceph.rbdvd import lenient_hypervisor
    from vmceph.rbdvd_params import SPEC
    # unset or refused: libvirt's default (`virsh uri`, here its fallback)
    monkeypatch.setattr(virt, "default_uri", lambda timeout, log=None: "qemu:///system")

    class Ctx:
        params = ocf.Params(SPEC, env)
        deadline = ocf.Deadline(5.0, margin_s=0)
        log = None
    assert lenient_hypervisor(Ctx()) == uri
