"""The .deb and the .rpm, built and checked for real (see packaging/README.md).

- packaging/build-deb: dpkg-buildpackage of the working tree, then lintian --fail-on error;
- packaging/build-rpm: rpmbuild -bb of packaging/rpm/vmceph.spec;
- packaging/check-installed: apt-get install of the .deb, the installed agents through
  crm_resource, pcs and man, then apt-get purge and nothing left behind.

These need root (the build dependencies are installed with 'make deps-package', and the
.deb is installed on this host and purged again): as another user they are skipped, loudly.
The man page generators are also checked directly, which needs no root.

Every step runs in its own process group with a time limit, and the .deb is purged at the
end whatever happened, so a failure leaves no /usr/lib/ocf/resource.d/vmceph behind.
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
OUT = PACKAGING / "out"
OCF_DIR = Path("/usr/lib/ocf/resource.d/vmceph")
PY = "/usr/bin/python3"

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT,
    reason="!!! PACKAGING NOT TESTED: building and installing the .deb/.rpm needs root "
           "(apt-get, dpkg); run as root, e.g. 'sudo make package && sudo "
           "packaging/check-installed' !!!")

# Seconds. Measured on the 2-core CI machine: build-deb ~10 s (lintian included),
# build-rpm ~3 s, check-installed ~20 s; deps-package is minutes only the first time.
# check-installed may also wait up to 600 s for the dpkg lock.
LIMITS = {"deps-package": 1500, "build-deb": 900, "build-rpm": 600, "check-installed": 1500}


def run_step(name, argv, step_times, timeout=None, env=None):
    """Run a packaging step; returns (exit code, output).

    On timeout: a build gets SIGTERM as a whole process group; check-installed gets it
    alone, so that a running apt-get/dpkg is not interrupted half-way (which would leave
    the host's package database to repair) while its exit trap waits for the dpkg lock
    and purges the package. SIGKILL for the group if that takes too long."""
    timeout = timeout or LIMITS[name]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=str(REPO), stdin=subprocess.DEVNULL, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            if name == "check-installed":
                os.kill(proc.pid, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=900 if name == "check-installed" else 60)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        step_times[name] = time.monotonic() - t0
        pytest.fail("%s took more than %d s and was stopped" % (name, timeout))
    step_times[name] = time.monotonic() - t0
    sys.stdout.write("$ %s  (%.1f s, exit %d)\n%s\n"
                     % (" ".join(map(str, argv)), step_times[name], proc.returncode, output))
    return proc.returncode, output


def version(flavour):
    return subprocess.run([PY, str(PACKAGING / "version.py"), flavour], check=True,
                          stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()


def vmceph_installed():
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "vmceph"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       universal_newlines=True)
    return p.returncode == 0 and any(s in p.stdout for s in
                                     ("installed", "config-files", "unpacked"))


# ---------------------------------------------------------------------------- root steps

@pytest.fixture(scope="module")
def deps(step_times):
    if not IS_ROOT:
        pytest.skip(needs_root.kwargs["reason"])
    rc, out = run_step("deps-package", ["make", "--no-print-directory", "deps-package"],
                       step_times)
    assert rc == 0, "make deps-package failed:\n" + out[-3000:]


@pytest.fixture(scope="module")
def built_deb(deps, step_times):
    rc, out = run_step("build-deb", [str(PACKAGING / "build-deb")], step_times)
    deb = OUT / ("vmceph_%s_all.deb" % version("deb"))
    return rc, out, deb


@pytest.fixture(scope="module")
def built_rpm(deps, step_times):
    rc, out = run_step("build-rpm", [str(PACKAGING / "build-rpm")], step_times)
    rpm = OUT / ("vmceph-%s-1.noarch.rpm" % version("rpm"))
    return rc, out, rpm


@needs_root
def test_build_deb_and_lintian(built_deb):
    rc, out, deb = built_deb
    assert rc == 0, "packaging/build-deb failed:\n" + out[-6000:]
    assert deb.is_file()
    lintian = (OUT / "lintian.txt").read_text()
    assert not re.search(r"^E: ", lintian, re.M), lintian


@needs_root
def test_deb_layout(built_deb):
    rc, out, deb = built_deb
    if rc != 0:
        pytest.fail("no .deb: packaging/build-deb failed (see test_build_deb_and_lintian)")
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], check=True,
                             stdout=subprocess.PIPE, universal_newlines=True).stdout
    modes = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    for agent in ("RBDVirtualDomain", "CephHealth"):
        assert modes.get("%s/%s" % (OCF_DIR, agent)) == "-rwxr-xr-x", listing
    for path in ("/usr/share/vmceph/vmceph/__init__.py",
                 "/usr/share/vmceph/vmceph/rbdvd.py",
                 "/usr/bin/vmceph",
                 "/lib/systemd/system/resource-agents-deps.target.d/vmceph.conf",
                 "/usr/share/man/man7/ocf_vmceph_RBDVirtualDomain.7.gz",
                 "/usr/share/man/man7/ocf_vmceph_CephHealth.7.gz",
                 "/usr/share/man/man1/vmceph.1.gz",
                 "/usr/share/doc/vmceph/examples/pcs.sh",
                 "/usr/share/doc/vmceph/examples/crmsh.crm",
                 "/usr/share/doc/vmceph/examples/cluster.xml",
                 "/usr/share/doc/vmceph/examples/fence-power-first.sh",
                 "/usr/share/doc/vmceph/examples/fence-power-first.crm",
                 "/usr/share/doc/vmceph/examples/fence-power-first.xml"):
        assert path in modes, "%s not in the .deb:\n%s" % (path, listing)
    # no public top-level module from a package not named python3-*: the library is
    # private (/usr/share/vmceph), nothing in dist-packages, no dist-info
    assert not [p for p in modes if "-packages/" in p], listing
    # deadclients' reboot-proof records: owned by the package, root only
    assert modes.get("/var/lib/vmceph/") == "drwx------", listing
    fields = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends", "Recommends",
                             "Version", "Architecture"], check=True, stdout=subprocess.PIPE,
                            universal_newlines=True).stdout
    for dep in ("python3-rados", "python3-rbd", "python3-libvirt", "python3-lxml",
                "resource-agents", "pacemaker-cli-utils", "libvirt-daemon-system",
                "qemu-system-x86", "qemu-block-extra", "ceph-common", "pacemaker"):
        assert re.search(r"\b%s\b" % re.escape(dep), fields), fields
    assert "Version: %s\n" % version("deb") in fields
    assert "Architecture: all\n" in fields


@needs_root
def test_build_rpm(built_rpm):
    rc, out, rpm = built_rpm
    assert rc == 0, "packaging/build-rpm failed:\n" + out[-6000:]
    assert rpm.is_file()

    def q(*args):
        return subprocess.run(["rpm", "-qp", *args, str(rpm)], check=True,
                              stdout=subprocess.PIPE, universal_newlines=True).stdout

    files = q("-l").split()
    for path in ("%s/RBDVirtualDomain" % OCF_DIR, "%s/CephHealth" % OCF_DIR,
                 "/usr/bin/vmceph", "/usr/share/doc/vmceph/examples/pcs.sh",
                 "/usr/share/doc/vmceph/examples/fence-power-first.crm",
                 "/usr/share/doc/vmceph/examples/fence-power-first.xml",
                 "/usr/share/vmceph/vmceph/rbdvd.py",
                 "/usr/lib/systemd/system/resource-agents-deps.target.d/vmceph.conf"):
        assert path in files, files
    assert not [f for f in files if "-packages/" in f], files
    # %license: the licence is marked as such (rpm -qL), not only shipped
    assert [f for f in q("-L").split() if f.endswith("/LICENSE")], q("-L")
    for page in ("man7/ocf_vmceph_RBDVirtualDomain.7", "man7/ocf_vmceph_CephHealth.7",
                 "man1/vmceph.1"):
        assert any(f.startswith("/usr/share/man/" + page) for f in files), files
    modes = q("--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]")
    assert "-rwxr-xr-x %s/RBDVirtualDomain" % OCF_DIR in modes
    # deadclients' reboot-proof records: owned by the package, root only
    assert "drwx------ /var/lib/vmceph" in modes, modes
    requires = q("-R")
    for dep in ("python3", "python3-rados", "python3-rbd", "python3-libvirt", "python3-lxml",
                "resource-agents", "pacemaker-cli"):
        assert re.search(r"^%s$" % re.escape(dep), requires, re.M), requires
    assert q("--scripts").strip() == "", "the .rpm must have no scriptlets"


@needs_root
def test_check_installed(built_deb, step_times):
    rc, out, deb = built_deb
    if rc != 0:
        pytest.fail("no .deb: packaging/build-deb failed (see test_build_deb_and_lintian)")
    try:
        # ocf-tester against the INSTALLED agent with a real RBD-backed domain: the
        # integration test, with VMCEPH_AGENT_DIR (set by check-installed) making the lab's
        # nodes see /usr/lib/ocf/resource.d/vmceph instead of the checkout's agents/.
        hook = "cd %s && PYTHONPATH=%s %s -m pytest -q -p no:cacheprovider %s -k ocf_tester" % (
            REPO, REPO / "tests", PY, REPO / "tests" / "integration" / "test_rbdvd.py")
        rc, out = run_step("check-installed", [str(PACKAGING / "check-installed")],
                           step_times, env=dict(os.environ, VMCEPH_INSTALLED_HOOK=hook))
    finally:
        if vmceph_installed():  # check-installed purges on exit; make sure of it
            for argv in (["apt-get", "purge", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                          "vmceph"], ["dpkg", "--purge", "vmceph"]):
                subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=900)
                if not vmceph_installed():
                    break
    assert rc == 0, "packaging/check-installed failed:\n" + out[-8000:]
    assert re.search(r"^check-installed: \d+ passed, 0 failed$", out, re.M), out[-3000:]
    assert not OCF_DIR.exists(), "%s left behind" % OCF_DIR
    assert not vmceph_installed()


# ---------------------------------------------------------------------------- no root

def test_versions_map_pep440_to_dpkg_and_rpm():
    spec = importlib.util.spec_from_file_location("vmceph_packaging_version",
                                                  str(PACKAGING / "version.py"))
    v = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v)
    assert v.package_version("0.1.0") == "0.1.0"
    assert v.package_version("0.2.0rc1") == "0.2.0~rc1"
    assert v.package_version("1.0a2") == "1.0~a2"
    assert v.package_version("1.0.dev3") == "1.0~dev3"
    assert version("python") == v.python_version(str(REPO))
    with pytest.raises(SystemExit):
        v.package_version("1.0+local")


def test_man_pages_come_from_meta_data_and_help(tmp_path):
    """make-manpages, as debian/rules and the spec run it, on this checkout."""
    p = subprocess.run([str(PACKAGING / "make-manpages"), str(tmp_path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    assert p.returncode == 0, p.stdout
    meta = subprocess.run([PY, str(REPO / "agents" / "RBDVirtualDomain"), "meta-data"],
                          stdout=subprocess.PIPE, universal_newlines=True, timeout=60,
                          check=True).stdout
    rbd = (tmp_path / "ocf_vmceph_RBDVirtualDomain.7").read_text()
    assert rbd.startswith('.\\" Generated by packaging/metadata2man.py')
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", '"SUPPORTED PARAMETERS"',
                    '"SUPPORTED ACTIONS"', '"EXAMPLE CRM SHELL"', '"EXAMPLE PCS"'):
        assert "\n.SH %s\n" % section in rbd
    for name in re.findall(r'<parameter name="([^"]+)"', meta):
        assert "\n\\fB%s\\fR\n" % name.replace("-", "\\-") in rbd, name
    assert "allow\\-migrate=true" in rbd
    ceph = (tmp_path / "ocf_vmceph_CephHealth.7").read_text()
    assert "clone cl_CephHealth p_CephHealth" in ceph
    cli = (tmp_path / "vmceph.1").read_text()
    assert '.SS "vmceph disks"' in cli and '.SS "vmceph check"' in cli
    # groff's own verdict: no warnings, where man-db is installed
    if Path("/usr/bin/man").exists():
        for page in tmp_path.iterdir():
            w = subprocess.run(["man", "--warnings", "-l", str(page)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=60,
                               env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
            assert w.stderr == "", "%s: %s" % (page.name, w.stderr)


# Units the drop-in must order pacemaker.service after (issue 13; packaging/systemd/vmceph.conf
# says why each): at shutdown systemd stops pacemaker.service, so Pacemaker migrates or stops
# the VMs, before any of these.
ORDERED_BEFORE_PACEMAKER = (
    "libvirtd.service", "virtqemud.service", "virtlogd.service", "virtlockd.service",
    "libvirt-guests.service", "virt-guest-shutdown.target",
    "ceph.target", "ceph-mon.target", "ceph-osd.target")


@pytest.mark.skipif(not Path("/lib/systemd/systemd").exists(), reason="!!! NOT TESTED: no "
                    "/lib/systemd/systemd to compute the unit graph (install systemd) !!!")
def test_systemd_drop_in_orders_pacemaker_after_libvirt_and_ceph():
    """systemd's own unit graph (systemd --test, no PID 1 needed) with the drop-in as the
    packages install it: pacemaker.service is ordered after each unit, and without the
    drop-in it is not (so the check has teeth on this machine)."""
    # not pytest's tmp_path: /tmp/pytest-of-root is 0700, and systemd --test runs as nobody
    tmp = tempfile.mkdtemp(prefix="vmceph-unitgraph.")
    try:
        _check_drop_in(Path(tmp))
    finally:
        shutil.rmtree(tmp)


def _check_drop_in(tmp_path):
    dropin = tmp_path / "with" / "resource-agents-deps.target.d"
    dropin.mkdir(parents=True)
    (dropin / "vmceph.conf").write_text((PACKAGING / "systemd" / "vmceph.conf").read_text())
    (tmp_path / "without").mkdir()
    for d in (tmp_path, tmp_path / "with", dropin, tmp_path / "without"):
        d.chmod(0o755)  # systemd --test runs as nobody when we are root
    (dropin / "vmceph.conf").chmod(0o644)

    def unitgraph(unit_path):
        return subprocess.run(
            [PY, str(PACKAGING / "unitgraph.py"), "--unit-path", str(unit_path),
             "pacemaker.service", *ORDERED_BEFORE_PACEMAKER],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
            timeout=120)

    with_it = unitgraph(tmp_path / "with")
    assert with_it.returncode == 0, with_it.stdout
    for unit in ORDERED_BEFORE_PACEMAKER:
        assert re.search(r"^ok   pacemaker\.service after %s: pacemaker\.service -> "
                         r"resource-agents-deps\.target -> " % re.escape(unit),
                         with_it.stdout, re.M), with_it.stdout
    assert "systemd: " not in with_it.stdout, with_it.stdout  # no warning about any file
    assert "drop-in %s/vmceph.conf" % dropin in with_it.stdout, with_it.stdout  # it was read
    without = unitgraph(tmp_path / "without")
    assert without.returncode == 1, without.stdout
    assert "FAIL pacemaker.service is not ordered after libvirtd.service" in without.stdout

    # systemd-analyze verify of the same graph: no unknown key, no ordering cycle
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", "pacemaker.service"],
                       cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120,
                       env=dict(os.environ, SYSTEMD_UNIT_PATH=str(tmp_path / "with") + ":"))
    assert v.returncode == 0 and not re.search(r"vmceph|cycle", v.stdout, re.I), v.stdout


def test_unitgraph_finds_transitive_order_from_both_directions():
    """packaging/unitgraph.py's parser on a hand-made dump: After= and Before= edges."""
    spec = importlib.util.spec_from_file_location("vmceph_unitgraph",
                                                  str(PACKAGING / "unitgraph.py"))
    ug = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ug)
    dump = ("\t-> Unit a.service:\n\t\tAfter: t.target (origin-file)\n"
            "\t-> Unit t.target:\n\t\tDropIn Path: /x/t.target.d/v.conf\n"
            "\t-> Unit c.service:\n\t\tBefore: t.target (destination-file)\n"
            "\t-> Unit d.service:\n\t\tAfter: a.service (origin-file)\n")
    graph = ug.after_graph(ug.parse(dump))
    assert ug.path_after(graph, "a.service", "c.service") == [
        "a.service", "t.target", "c.service"]
    assert ug.path_after(graph, "a.service", "d.service") is None  # d is after a, not before


def test_cli_page_covers_what_argparse_manpage_finds(tmp_path):
    """An independent oracle for vmceph.1's completeness: argparse-manpage (Debian's
    python3-argparse-manpage) walks the argparse parser object itself, where cli2man.py
    reads --help text. Every command section and every option it documents must be in
    our page (packaging/README.md says why our page is the one shipped)."""
    tool = shutil.which("argparse-manpage")
    if tool is None:
        pytest.skip("!!! NOT TESTED: argparse-manpage missing: 'make deps-package' "
                    "(python3-argparse-manpage) !!!")
    ref = subprocess.run([tool, "--module", "vmceph.cli", "--function", "_parser"],
                         cwd="/", env=dict(os.environ, PYTHONPATH=str(REPO / "lib")),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert ref.returncode == 0, ref.stderr
    ours = subprocess.run([PY, str(PACKAGING / "cli2man.py"), "-o", str(tmp_path / "v.1")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=120)
    assert ours.returncode == 0, ours.stdout
    page = (tmp_path / "v.1").read_text()
    # ours: '.SS "vmceph config put"' sections, options as written by --help (escaped)
    sections = dict(re.findall(r'^\.SS "vmceph ([^"]+)"\n(.*?)(?=^\.S[SH] |\Z)', page,
                               re.M | re.S))
    theirs = re.split(r"^\.SH OPTIONS 'vmceph ([^']+)'\n", ref.stdout, flags=re.M)[1:]
    assert len(theirs) >= 2 * 5, ref.stdout[:2000]  # at least the five commands
    # argparse-manpage 1.2.2 prints the top-level options (--version) after the last
    # command's section, as if they were that command's: check those in our OPTIONS
    top = {r"\-\-version"}
    options_section = page.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
    for option in top:
        assert option + " " in options_section, options_section
    for command, body in zip(theirs[0::2], theirs[1::2]):
        if command == theirs[-2]:
            body = body.replace(r"\fB\-\-version\fR", "")
        assert command in sections, "argparse-manpage documents 'vmceph %s', vmceph.1 " \
            "has no section for it" % command
        for option in set(re.findall(r"\\fB(\\-\\-?[\w\\-]+)\\fR", body)) - {r"\-h", r"\-\-help"}:
            assert option + " " in sections[command] or option + "\n" in sections[command] \
                or option + "," in sections[command], \
                "vmceph %s: %s missing from vmceph.1" % (command, option.replace("\\", ""))
