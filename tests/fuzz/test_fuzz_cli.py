"""Property-based fuzzing of ``vmceph disks`` and ``vmceph check`` as whole processes:
any file, option value or byte string gives exit 0, 1 or 2 with no traceback and no block;
a usage error (2) says why on stderr."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import cli, cli_problems
from test_fuzz_agents import COMMON, HOSTILE, _n, _resolve

FILES = ["@dom", "@dom_running", "@dom_baduuid", "@dom_newline", "@dom_malformed",
         "@dom_binary", "@dom_empty", "@fifo", "@dir", "/dev/null", "@dangling", "@loop",
         "@enotdir", "@toolong", "@missing", "@file", "relative/path"]
CONFS = ["@ceph_conf", "@ceph_binary", "@ceph_include", "@passwd", "@fifo", "@dir",
         "@dangling", "@loop", "@enotdir", "@toolong", "@missing", "/dev/null"]
TIMEOUTS = ["1", "2", "0.5", "-1", "0", "nan", "inf", "-inf", "1e999", "x", "3601", "",
            b"\xff"]
VALUES = st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=12), st.text(max_size=12))

OPTIONS = {
    "check": {"--ceph-conf": st.sampled_from(CONFS) | VALUES,
              "--ceph-keyring": st.sampled_from(CONFS) | VALUES,
              "--ceph-user": st.sampled_from(["", "admin", "client.admin"]) | VALUES,
              "--node-addresses": st.sampled_from(["n1=10.0.0.1", "n1"]) | VALUES,
              "--membership": st.sampled_from(["n1=member", "n1=alive"]) | VALUES,
              "--node": VALUES,
              "--unknown-client-policy": st.sampled_from(["refuse", "blocklist", "x"]),
              "--hypervisor": st.sampled_from(["test:///default", "qemu:///system"]) | VALUES,
              "--image": st.sampled_from(["rbd/a", "rbd/ns/a", "a", "/", "rbd//a"]) | VALUES,
              "--unguarded": VALUES},
    "disks": {"--ceph-conf": st.sampled_from(CONFS) | VALUES,
              "--ceph-user": VALUES,
              "--hypervisor": st.sampled_from(["test:///default", "qemu:///system"]) | VALUES,
              "--unguarded": VALUES},
}


@st.composite
def command_lines(draw):
    cmd = draw(st.sampled_from(["check", "disks"]))
    args = [cmd]
    if cmd == "disks" or draw(st.booleans()):
        args.append(draw(st.sampled_from(FILES) | st.sampled_from(FILES) | VALUES))
    opts = draw(st.dictionaries(st.sampled_from(sorted(OPTIONS[cmd])), st.just(None),
                                max_size=4))
    for name in opts:
        args += [name, draw(OPTIONS[cmd][name])]
    # a valid timeout is short: check waits for Ceph (which never answers here) that long
    args += ["--timeout", draw(st.sampled_from(["1", "2", "0.5"]) | st.sampled_from(TIMEOUTS))]
    if draw(st.booleans()):
        args.append("--json")
    return args


def check(world, argv):
    argv = [_resolve(world, a) for a in argv]
    r = cli(argv)
    found = cli_problems(r)
    assert not found, "%s\n%s" % (found, r.describe())


@settings(max_examples=_n(40), **COMMON)
@given(argv=command_lines())
def test_cli_properties(world, argv):
    check(world, argv)


@pytest.mark.long
@settings(max_examples=_n(600), **COMMON)
@given(argv=command_lines())
def test_cli_properties_long(world, argv):
    check(world, argv)
