"""The fuzz suite's world: the files every case may name (valid and hostile), and the
session's figures (invocations, time, findings) printed at the end for docs/reliability.md.

``make fuzz`` runs everything (at least 5,000 invocations); ``make test`` runs the tests
not marked ``long`` (a few hundred). VMCEPH_FUZZ_SCALE multiplies the number of examples
of the property-based tests."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Stats  # noqa: E402

DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory>1048576</memory>
  <os><type>hvm</type></os>
</domain>
"""
GOOD_UUID = "6f1c0b8e-5b7e-4d0a-9a61-3d0b2f6c9e11"


class World:
    """Paths of the files the cases use (all under one temporary directory)."""

    def __init__(self, root):
        self.root = root
        j = lambda *p: os.path.join(root, *p)  # noqa: E731

        def write(name, data, mode=0o644):
            with open(j(name), "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())
            os.chmod(j(name), mode)
            return j(name)

        self.dom = write("vm1.xml", DOMAIN.format(name="vm1", uuid=GOOD_UUID))
        # 'test' is the domain libvirt's test driver runs in every fresh process
        self.dom_running = write("test.xml", DOMAIN.format(
            name="test", uuid="6695eb01-f6a4-8304-79aa-97f2502e193f"))
        self.dom_baduuid = write("baduuid.xml", DOMAIN.format(name="vm1", uuid="xyz"))
        self.dom_newline = write("newline.xml", DOMAIN.format(
            name="vm1&#10;ocf-exit-reason:forged by the domain name", uuid=GOOD_UUID))
        self.dom_malformed = write("malformed.xml", "<domain type='test'><name>vm1</na")
        self.dom_binary = write("binary.xml", bytes(range(256)) * 4)
        self.dom_empty = write("empty.xml", "")
        self.ceph_conf = write("ceph.conf", "[global]\nmon_host = 127.0.0.1:1\n"
                               "auth_supported = none\n")
        self.ceph_binary = write("ceph-binary.conf", b"\x00\xff\xfe binary\n")
        self.ceph_include = write("ceph-include.conf", "[global]\n$include /etc/x.conf\n")
        self.passwd = write("passwd", "root:x:0:0:root:/root:/bin/bash\n")
        self.keyring = write("keyring", "[client.admin]\n\tkey = AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==\n")
        self.script_ok = write("ok.sh", "#!/bin/sh\nexit 0\n", 0o755)
        self.script_fail = write("fail.sh", "#!/bin/sh\nexit 3\n", 0o755)
        self.script_noexec = write("noexec.sh", "#!/bin/sh\nexit 0\n", 0o644)
        self.file = write("afile", "just a file\n")
        self.fifo = j("fifo")
        os.mkfifo(self.fifo)
        self.dir = j("adir")
        os.mkdir(self.dir)
        self.snapdir = j("snapshots")
        self.dangling = j("dangling")
        os.symlink(j("nowhere"), self.dangling)
        self.loop = j("loop")
        os.symlink(self.loop, self.loop)
        self.enotdir = os.path.join(self.file, "below")
        self.toolong = "/" + "n" * 5000
        self.rsctmp = j("rsctmp")
        os.mkdir(self.rsctmp)
        # a marker the hostile values try to create: it must never exist
        self.marker = j("pwned")

    def special_paths(self):
        return [self.fifo, self.dir, "/dev/null", self.dangling, self.loop, self.enotdir,
                self.toolong, self.file, "relative/path", "", self.root + "/missing"]


@pytest.fixture(scope="session")
def world():
    root = tempfile.mkdtemp(prefix="vmceph-fuzz-")
    w = World(root)
    yield w
    assert not os.path.exists(w.marker), "a hostile value ran a program"
    shutil.rmtree(root, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if not Stats.invocations:
        return
    kinds = ", ".join("%s %d" % kv for kv in sorted(Stats.by_kind.items()))
    slowest, what = Stats.slowest
    failed = len(terminalreporter.stats.get("failed", []))
    terminalreporter.write_line(
        "fuzz: %d invocations (%s), %.0f s of process time, slowest %.1f s, %d failing "
        "test(s)" % (Stats.invocations, kinds, Stats.seconds, slowest, failed))
    if os.environ.get("VMCEPH_FUZZ_CODES"):
        for (kind, action), hist in sorted(Stats.codes.items(), key=str):
            terminalreporter.write_line("  %-16s %-14s %s" % (kind, action[:14], ", ".join(
                "rc %s: %d" % kv for kv in sorted(hist.items(), key=str))))
