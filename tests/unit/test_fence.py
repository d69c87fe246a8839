"""fence_vmceph: the fencing logic (lib/vmceph/fence.py) against a stateful model of Ceph,
and the executable on fence-agents' fencing.py.

The model (FakeCluster) keeps what the real cluster keeps: blocklist entries by OSD map
epoch, each OSD's own epoch (an OSD may lag behind the monitors), monitor sessions, the
config-key store. A write of a client instance is accepted by an OSD iff that OSD's map does
not blocklist the instance, with the real matching rule (the address itself, or the same IP
with port 0 and nonce 0). Oracles come from the issue: after ``off`` returned, no instance of
the target completes a write; after ``on``, only new instances can; daemons are never
blocklisted one by one; no success without the OSD map; errors are reasons, not tracebacks.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vmceph import fence, safety
from vmceph.ceph import CephPermission, CephUnavailable
from vmceph.fence import FenceError, NodeFencer

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agents" / "fence" / "fence_vmceph"
HAVE_FENCING = os.path.exists("/usr/share/fence/fencing.py")

T_IP, OTHER_IP, OWN_IP = "10.0.0.3", "10.0.0.2", "10.0.0.1"


def blocked(entries, inst):
    """The OSDs' rule (OSDMap::is_blocklisted): the instance, or its IP with port/nonce 0."""
    ip = inst.rsplit(":", 1)[0]
    return inst in entries or ("%s:0/0" % ip) in entries


class FakeCluster:
    """Monitors + OSDs, as far as fencing sees them."""

    def __init__(self, osds=None, mons=("a", "b", "c")):
        # osd id -> ip; each OSD holds its own map epoch
        self.osd_ip = osds or {0: OWN_IP, 1: OTHER_IP, 2: T_IP}
        self.osd_up = {o: True for o in self.osd_ip}
        self.osd_silent = set()         # do not answer `tell osd.N status`
        self.osd_lag = {}               # osd -> number of polls before it takes new maps
        self.epoch = 1
        self.maps = {1: frozenset()}    # epoch -> blocklist entries
        self.osd_epoch = {o: 1 for o in self.osd_ip}
        self.mons = list(mons)
        self.quorum = list(mons)
        self.mute_mons = set()          # quorum members whose `sessions` fails
        self.sessions = []              # session dicts as `tell mon.X sessions` gives them
        self.keys = {}
        self.deny = set()               # prefixes answered with EACCES
        self.log = []                   # (what, epoch) in order
        self.osd_tell_denied = False
        self.unavailable_for = 0        # next N monitor writes time out (re-election)

    # -- monitors
    def _commit(self, entries):
        self.epoch += 1
        self.maps[self.epoch] = frozenset(entries)
        for o in self.osd_ip:           # OSDs take the map unless told to lag
            if not self.osd_lag.get(o) and o not in self.osd_silent:
                self.osd_epoch[o] = self.epoch

    def entries(self):
        return set(self.maps[self.epoch])

    def mon(self, prefix, **a):
        if not self.quorum or len(self.quorum) * 2 <= len(self.mons):
            raise CephUnavailable("Ceph '%s' timed out (no monitor quorum?)" % prefix)
        if prefix.startswith("osd blocklist") and self.unavailable_for:
            self.unavailable_for -= 1
            raise CephUnavailable("Ceph 'osd blocklist' timed out (no monitor quorum?)")
        if prefix in self.deny:
            raise CephPermission("Ceph refused '%s': access denied" % prefix)
        self.log.append((prefix + " " + str(a.get("blocklistop", "")), self.epoch))
        if prefix == "osd blocklist":
            e = self.entries()
            if a["blocklistop"] == "add":
                assert a["expire"] >= 86400 * 365, "fence entries must not expire soon"
                e.add(a["addr"])
            elif a["blocklistop"] == "rm":
                e.discard(a["addr"])
            self._commit(e)
            return None
        if prefix == "osd blocklist ls":
            return json.dumps([{"addr": x, "until": "2036"} for x in sorted(self.entries())]) \
                + json.dumps([])
        if prefix == "config-key set":
            self.keys[a["key"]] = a["val"]
            return None
        if prefix == "config-key get":
            if a["key"] not in self.keys:
                raise CephUnavailable("Ceph 'config-key get' failed (-2): no such key")
            return json.loads(self.keys[a["key"]])
        if prefix == "config-key rm":
            self.keys.pop(a["key"], None)
            return None
        if prefix == "osd down":
            for i in a["ids"]:
                self.osd_up[int(i)] = False
            self._commit(self.entries())
            return None
        if prefix == "osd dump":
            return {"epoch": self.epoch, "osds": [
                {"osd": o, "up": int(self.osd_up[o]),
                 "public_addrs": {"addrvec": [{"type": "v2", "addr": "%s:6800" % ip,
                                               "nonce": 100 + o}]}}
                for o, ip in self.osd_ip.items()]}
        if prefix == "osd stat":
            return {"epoch": self.epoch}
        if prefix == "quorum_status":
            return {"quorum_names": list(self.quorum),
                    "monmap": {"mons": [{"name": m} for m in self.mons]}}
        raise AssertionError("unexpected mon command %s" % prefix)

    # -- OSDs
    def osd_status(self, osd):
        if self.osd_tell_denied:
            return -13, b"", "access denied"
        if osd in self.osd_silent:
            raise CephUnavailable("osd.%d did not answer" % osd)  # stands for a hang
        if self.osd_lag.get(osd):
            self.osd_lag[osd] -= 1
            if not self.osd_lag[osd]:
                self.osd_epoch[osd] = self.epoch
        return 0, json.dumps({"newest_map": self.osd_epoch[osd]}).encode(), ""

    def write(self, inst, osd):
        """Would ``osd`` (with its own map) accept a write of client instance ``inst``?"""
        if not self.osd_up[osd]:
            return False
        return not blocked(self.maps[self.osd_epoch[osd]], inst)


def client_session(inst, entity="client.vmceph"):
    addr, nonce = inst.rsplit("/", 1)
    return {"name": "client.?", "entity_name": entity, "con_type": "client",
            "addrs": {"addrvec": [{"type": "any", "addr": addr, "nonce": int(nonce)}]}}


def daemon_sessions(ip):
    """What a hyperconverged node's daemons look like in `sessions` (16.2.15, lab)."""
    return [
        {"name": "mon.2", "entity_name": "", "con_type": "mon",
         "addrs": {"addrvec": [{"type": "v2", "addr": ip + ":3300", "nonce": 0}]}},
        {"name": "osd.2", "entity_name": "osd.2", "con_type": "osd",
         "addrs": {"addrvec": [{"type": "v2", "addr": ip + ":6800", "nonce": 12084}]}},
        {"name": "mgr.4121", "entity_name": "mgr.n3", "con_type": "mgr",
         "addrs": {"addrvec": [{"type": "any", "addr": ip + ":0", "nonce": 9358}]}},
        # the manager's own librados clients: con_type client, entity mgr.*
        {"name": "client.?", "entity_name": "mgr.n3", "con_type": "client",
         "addrs": {"addrvec": [{"type": "any", "addr": ip + ":0", "nonce": 1865354144}]}},
    ]


class FakeSession:
    """The part of CephSession fence.py uses, over a FakeCluster."""

    MON_OP_CAP = 10.0

    def __init__(self, cluster, deadline=None, own=OWN_IP + ":0/777"):
        self.c = cluster
        self.deadline = deadline
        self.abandoned = []
        self.own = own
        self.client_epoch = cluster.epoch
        self.cluster = self   # session.cluster.osd_command / get_addrs

    def _left(self, cap):
        return cap if self.deadline is None else max(0.0, min(cap, self.deadline.remaining()))

    def mon(self, prefix, **a):
        # entries are added through librados' own call (issue 13), never hand-built
        assert not (prefix == "osd blocklist" and a.get("blocklistop") == "add"), a
        return self.c.mon(prefix, **a)

    # CephSession's blocklist_add/blocklist_host call rados_blocklist_add, which sends this
    # monitor command (integer seconds; python3-rados 16.2.15)
    def blocklist_add(self, addr, expire_s):
        assert isinstance(expire_s, int) and addr.rsplit("/", 1)[1] != "0", (addr, expire_s)
        return self.c.mon("osd blocklist", blocklistop="add", addr=addr, expire=float(expire_s))

    def blocklist_host(self, ip, expire_s):
        assert isinstance(expire_s, int), expire_s
        return self.c.mon("osd blocklist", blocklistop="add", addr=safety.host_entry(ip),
                          expire=float(expire_s))

    def mon_target(self, name, prefix, **a):
        assert prefix == "sessions"
        if name in self.c.mute_mons:
            raise CephUnavailable("mon.%s did not answer 'sessions'" % name)
        return list(self.c.sessions)

    def wait_for_latest_osdmap(self):
        if not self.c.quorum:
            raise CephUnavailable("no map")
        self.c.log.append(("wait_for_latest_osdmap", self.c.epoch))
        self.client_epoch = self.c.epoch
        return 0.0

    def osd_command(self, osd, cmd, inbuf):
        assert json.loads(cmd)["prefix"] == "status"
        return self.c.osd_status(osd)

    def client_addrs(self):
        return [self.own.split(":")[0]]

    def get_addrs(self):
        return "[any:%s]" % self.own

    def quorum(self):
        ok = len(self.c.quorum) * 2 > len(self.c.mons)
        return ok, "quorum %s" % ",".join(self.c.quorum), self.c.quorum, self.c.mons


class Deadline:
    def __init__(self, seconds):
        import time
        self.end = time.monotonic() + seconds

    def remaining(self):
        import time
        return max(0.0, self.end - time.monotonic())


@pytest.fixture
def cl():
    return FakeCluster()


@pytest.fixture
def fencer(cl):
    f = NodeFencer(FakeSession(cl, Deadline(5)))
    f.CONFIRM_S = 0.1
    f.POLL_S = 0.001
    return f


# --------------------------------------------------------------------- pure helpers
def test_host_entry_and_state():
    assert fence.host_entry("10.0.0.3") == "10.0.0.3:0/0"
    assert fence.host_entry("fd00::3") == "[fd00::3]:0/0"
    assert fence.fence_state(["10.0.0.3:0/0"], ["10.0.0.3"]) == "off"
    # half of the node's addresses is not a fence
    assert fence.fence_state(["10.0.0.3:0/0"], ["10.0.0.3", "10.1.0.3"]) == "on"
    # a per-instance entry is not a fence of the node
    assert fence.fence_state(["10.0.0.3:0/55"], ["10.0.0.3"]) == "on"
    assert fence.fence_state([], []) == "on"


def test_parse_blocklist_two_arrays():
    # 16.2.15 answers two arrays back to back (captured in the lab)
    out = ('[{"addr":"10.179.0.1:0/0","until":"2026-12-01T16:04:00.706003+0000"}]'
           '[{"range":"10.9.9.9:0/32","until":"2026-12-01T16:52:20.565248+0000"}]')
    assert fence.parse_blocklist(out) == (["10.179.0.1:0/0"], ["10.9.9.9:0/32"])
    assert fence.parse_blocklist("[][]") == ([], [])
    assert fence.parse_blocklist([{"addr": "1.2.3.4:0/5"}]) == (["1.2.3.4:0/5"], [])


def test_sessions_never_yield_a_daemon():
    sessions = daemon_sessions(T_IP) + [client_session(T_IP + ":0/42"),
                                        client_session(OTHER_IP + ":0/43")]
    assert fence.instances_on(sessions, [T_IP]) == [T_IP + ":0/42"]
    assert all(fence.session_instance(s) is None for s in daemon_sessions(T_IP))


def test_osds_on():
    assert fence.osds_on(FakeCluster().mon("osd dump"), [T_IP]) == [2]


# --------------------------------------------------------------------- off
def test_off_blocks_every_instance_of_the_node_and_spares_others(cl, fencer):
    stale = [T_IP + ":0/11", T_IP + ":0/12"]      # one partitioned: in no session
    cl.sessions = [client_session(stale[0])]
    r = fencer.off("n3", [T_IP])
    assert r["entries"] == [T_IP + ":0/0"]
    for inst in stale + [T_IP + ":0/99"]:          # also one started after the fence
        assert not any(cl.write(inst, o) for o in cl.osd_ip), inst
    assert all(cl.write(OTHER_IP + ":0/5", o) for o in cl.osd_ip)
    assert fencer.status([T_IP]) == "off"
    assert all(cl.osd_up.values()), "an alive OSD of the node must stay up"
    assert json.loads(cl.keys["vmceph/fence/n3"])["host_entries"] == [T_IP + ":0/0"]


def test_off_waits_for_the_map_and_every_osd_before_success(cl, fencer):
    cl.osd_lag = {1: 3}                            # osd.1 gets the new map late
    fencer.off("n3", [T_IP])
    kinds = [k for k, _ in cl.log]
    assert kinds.index("wait_for_latest_osdmap") > kinds.index("osd blocklist add")
    # the oracle: when off returns, no OSD still accepts the target's writes
    assert cl.osd_epoch[1] == cl.epoch
    assert not cl.write(T_IP + ":0/11", 1)


def test_off_marks_a_silent_target_osd_down(cl, fencer):
    cl.osd_silent = {2}                            # the node crashed: its OSD is mute
    r = fencer.off("n3", [T_IP])
    assert r["osds_down"] == [2] and not cl.osd_up[2]
    assert cl.osd_up[0] and cl.osd_up[1]


def test_off_fails_when_another_osd_cannot_prove_the_map(cl):
    cl.osd_silent = {1}
    f = NodeFencer(FakeSession(cl, Deadline(0.6)))
    f.CONFIRM_S, f.POLL_S = 0.05, 0.001
    with pytest.raises(FenceError, match="osd.1 did not confirm"):
        f.off("n3", [T_IP])
    assert cl.osd_up[1], "an OSD of another node is never marked down"


def test_off_needs_the_osd_caps(cl, fencer):
    cl.osd_tell_denied = True
    with pytest.raises(CephPermission, match="osd 'allow \\*'"):
        fencer.off("n3", [T_IP])


def test_off_mark_osds_down_option(cl, fencer):
    r = fencer.off("n3", [T_IP], mark_osds_down=True)
    assert r["osds_down"] == [2] and not cl.osd_up[2]


def test_off_without_quorum_fails_within_the_budget(cl):
    cl.quorum = ["a"]
    import time
    f = NodeFencer(FakeSession(cl, Deadline(2.5)))
    t0 = time.monotonic()
    with pytest.raises(CephUnavailable):
        f.off("n3", [T_IP])
    assert time.monotonic() - t0 < 2.5
    assert cl.entries() == set()


def test_off_retries_while_the_monitors_reelect(cl, fencer, monkeypatch):
    monkeypatch.setattr(fence.time, "sleep", lambda s: None)
    cl.unavailable_for = 2          # a mon died: the first commands time out
    assert fencer.off("n3", [T_IP])["entries"] == [T_IP + ":0/0"]
    assert fencer.status([T_IP]) == "off"


def test_status_waits_out_a_reelection_too(cl, fencer, monkeypatch):
    # fencing.py asks the status before off: it must not fail the fence either
    monkeypatch.setattr(fence.time, "sleep", lambda s: None)
    cl.unavailable_for = 2
    assert fencer.status([T_IP]) == "on"


def test_off_refuses_the_fencers_own_address(cl, fencer):
    with pytest.raises(FenceError, match="own"):
        fencer.off("n1", [OWN_IP])
    assert cl.entries() == set()


def test_off_refuses_a_node_without_addresses(fencer):
    with pytest.raises(FenceError, match="no Ceph client address"):
        fencer.off("n3", [])


# --------------------------------------------------------------------- on
def test_on_keeps_living_stale_instances_out(cl, fencer):
    stale = T_IP + ":0/11"
    cl.sessions = daemon_sessions(T_IP) + [client_session(stale),
                                           client_session(OTHER_IP + ":0/5")]
    fencer.off("n3", [T_IP])
    r = fencer.on("n3", [T_IP])
    assert r["instances"] == [stale]
    assert not any(cl.write(stale, o) for o in cl.osd_ip)
    assert all(cl.write(T_IP + ":0/1234", o) for o in cl.osd_ip), "a new instance writes"
    assert fencer.status([T_IP]) == "on"
    # never a per-instance entry of a daemon or of another node
    assert cl.entries() == {stale}
    assert "vmceph/fence/n3" not in cl.keys
    # the instances are blocklisted, and that map held, before the host entry goes
    kinds = [k for k, _ in cl.log]
    rm = kinds.index("osd blocklist rm")
    assert "wait_for_latest_osdmap" in kinds[kinds.index("osd blocklist add", 2):rm]


def test_on_refuses_an_entry_it_did_not_add(cl, fencer):
    cl.mon("osd blocklist", blocklistop="add", addr=T_IP + ":0/0", expire=1e9)
    with pytest.raises(FenceError, match="did not add"):
        fencer.on("n3", [T_IP])
    assert T_IP + ":0/0" in cl.entries()


def test_on_fails_safe_when_a_monitor_cannot_list_its_sessions(cl, fencer):
    fencer.off("n3", [T_IP])
    cl.mute_mons = {"b"}
    with pytest.raises(CephUnavailable):
        fencer.on("n3", [T_IP])
    assert fencer.status([T_IP]) == "off", "the node stays fenced"


def test_on_of_a_node_not_fenced_does_nothing(cl, fencer):
    assert fencer.on("n3", [T_IP])["removed"] == []
    assert cl.entries() == set()


# --------------------------------------------------------------------- the model, randomised
def test_model_no_stale_write_after_off_only_new_after_on():
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hyp.settings(max_examples=60, deadline=None)
    @hyp.given(st.lists(st.tuples(st.sampled_from(["start", "partition", "off", "on",
                                                   "reboot"]),
                                  st.integers(0, 2)), max_size=14))
    def run(steps):
        cl = FakeCluster()
        f = NodeFencer(FakeSession(cl, Deadline(5)))
        f.CONFIRM_S, f.POLL_S = 0.01, 0.0005
        alive, connected, nonce = [], set(), [100]
        fenced_gen = None         # instances alive when the last off returned
        for op, k in steps:
            if op == "start":
                nonce[0] += 1
                inst = "%s:0/%d" % (T_IP, nonce[0])
                alive.append(inst)
                connected.add(inst)
            elif op == "partition" and alive:
                connected.discard(alive[k % len(alive)])
            elif op == "reboot":
                alive, connected = [], set()
            elif op == "off":
                f.off("n3", [T_IP])
                fenced_gen = set(alive)
            elif op == "on":
                cl.sessions = [client_session(i) for i in sorted(connected)]
                f.on("n3", [T_IP])
                # on cannot see a living instance with no monitor session: the documented
                # limit (docs/fencing.md); the model reboots such a node first
                if any(i not in connected for i in alive):
                    return
            if fenced_gen is not None:
                for inst in fenced_gen & set(alive):
                    assert not any(cl.write(inst, o) for o in cl.osd_ip), (steps, inst)
        hyp.note(str(cl.entries()))
    run()


# --------------------------------------------------------------------- options and the agent
def test_config_parsing():
    c = fence.Config({"--node-addresses": "n1=10.0.0.1 n2=10.0.0.2,10.1.0.2",
                      "--mark-osds-down": "1", "--ceph-timeout": "15"})
    assert c.static == {"n1": ["10.0.0.1"], "n2": ["10.0.0.2", "10.1.0.2"]}
    assert c.mark_down and c.timeout == 15.0 and c.user is None
    with pytest.raises(FenceError, match="not NODE=IP"):
        fence.Config({"--node-addresses": "n1"})
    with pytest.raises(FenceError, match="not an IP"):
        fence.Config({"--node-addresses": "n1=host1"})
    with pytest.raises(FenceError, match="between"):
        fence.Config({"--ceph-timeout": "0"})


def test_agent_addresses_from_option_then_attribute(cl, fencer):
    cfg = fence.Config({"--node-addresses": "n2=" + OTHER_IP})
    a = fence.Agent(cfg, fencer, lambda: {"n3": {"vmceph-ceph-addrs": T_IP},
                                          "n4": {"other": "x"}})
    assert a.ips("n2") == [OTHER_IP]
    assert a.ips("n3") == [T_IP]
    with pytest.raises(FenceError, match="node_addresses"):
        a.ips("n4")
    a.set_status("n3", "off")
    assert a.get_status("n3") == "off"
    assert a.nodes() == {"n2": ("n2", "on"), "n3": ("n3", "off")}
    a.set_status("n3", "on")
    assert a.get_status("n3") == "on"


def run_agent(args, stdin=None, timeout=60):
    return subprocess.run([sys.executable, str(AGENT)] + args, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


needs_fencing = pytest.mark.skipif(not HAVE_FENCING, reason="fence-agents' fencing.py "
                                   "missing: install Debian's fence-agents (make deps)")


@needs_fencing
def test_metadata_follows_fence_agents():
    p = run_agent(["-o", "metadata"])
    assert p.returncode == 0, p.stderr
    root = ET.fromstring(p.stdout)
    assert root.get("name") == "fence_vmceph"
    params = {e.get("name") for e in root.iter("parameter")}
    assert {"plug", "ceph_conf", "ceph_user", "ceph_keyring", "node_addresses",
            "mark_osds_down", "ceph_timeout", "pcmk_host_map"} - {"pcmk_host_map"} <= params
    actions = {a.get("name"): a for a in root.iter("action")}
    assert {"on", "off", "status", "list", "monitor", "metadata", "validate-all"} <= set(actions)
    assert "reboot" not in actions, "a fabric fence has no reboot"
    assert actions["on"].get("automatic") == "1", "provides unfencing"
    # fence-agents' own schema: Debian ships it in /usr/share/cluster/relaxng (upstream
    # /usr/share/fence); this check used to look only at the upstream path and so never ran
    rngs = [r for r in ("/usr/share/cluster/relaxng/metadata.rng",
                        "/usr/share/fence/metadata.rng") if os.path.exists(r)]
    assert rngs, "fence-agents is installed but its metadata.rng is not where expected"
    v = subprocess.run(["xmllint", "--noout", "--relaxng", rngs[0], "-"], input=p.stdout,
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


@needs_fencing
def test_stdin_and_bad_options_give_reasons_not_tracebacks():
    p = run_agent([], stdin="action=validate-all\nnode_addresses=n1\nplug=n1\n")
    assert p.returncode != 0
    assert "not NODE=IP" in p.stderr and "Traceback" not in p.stderr


@needs_fencing
def test_unreachable_ceph_fails_fast_with_a_reason(tmp_path):
    conf = tmp_path / "ceph.conf"
    # a monitor address where nothing listens: connect must fail within ceph_timeout
    conf.write_text("[global]\nmon host = 127.0.0.1:1\nauth client required = none\n")
    import time
    t0 = time.monotonic()
    p = run_agent([], stdin="action=off\nplug=n3\nceph_conf=%s\nceph_timeout=3\n"
                  "node_addresses=n3=10.0.0.3\n" % conf)
    took = time.monotonic() - t0
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "cannot reach Ceph" in p.stderr
    assert took < 15, took


@needs_fencing
def test_man_page_is_made_from_the_metadata(tmp_path):
    out = tmp_path / "fence_vmceph.8"
    p = subprocess.run([sys.executable, str(ROOT / "packaging" / "fence2man.py"), "-o", str(out),
                        "--see-also", "stonith_admin(8)", str(AGENT)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    page = out.read_text()
    assert page.startswith('.TH "FENCE_VMCEPH" "8"')
    for section in ("NAME", "DESCRIPTION", "PARAMETERS", "ACTIONS", "STDIN PARAMETERS"):
        assert ".SH %s" % section in page
    for option in ("ceph\\-user", "node\\-addresses", "mark\\-osds\\-down", "ceph\\-timeout"):
        assert option in page, option
