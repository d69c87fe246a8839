"""The library calls of issue 13 against the real lab (Ceph Pacific 16.2, python3-rados):

- CephSession.blocklist_add through ``Rados.blocklist_add``: the entries the monitors list
  carry the asked expiry (whole seconds, a fraction rounded up, never the one-hour default),
  and a user the monitors refuse gets CephPermission;
- CephHealth's ``pools=`` from the monitors' PG_AVAILABILITY health check, as client.vmceph
  with mon/osd/mgr 'profile rbd' only (no 'pg ls-by-pool' cap): a pool whose PG cannot be
  placed makes the node yellow (never red) with the pool and PG in the reason; another pool's
  problem does not count as the watched pool's.

attrd_updater's XML output (no Pacemaker in this lab) is shown in
tests/e2e/test_libvirtd_restart.py. Reuses the session's lab; ~40 s.
"""

import json
import time
from datetime import datetime, timezone

import pytest

from conftest import ROOT, Agent

pytestmark = pytest.mark.lab

OCF_SUCCESS = 0
POOL = "vmceph-pgless"         # a pool whose PG no OSD can hold (its rule's root is empty)


def in_node(lab, code, node=1, timeout=60):
    p = lab.run(node, ["/usr/bin/python3", "-c", code], env={"PYTHONPATH": str(ROOT / "lib")},
                check=False, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


BLOCKLIST = """
import json
from vmceph.ceph import CephSession, CephError
from vmceph.ocf import Deadline
out = {}
with CephSession("/etc/ceph/ceph.conf", %(user)r, %(keyring)r, Deadline(30)) as s:
    for addr, expire in %(entries)r:
        try:
            s.blocklist_add(addr, expire)
            out[addr] = "ok"
        except (CephError, ValueError) as e:
            out[addr] = "%%s: %%s" %% (type(e).__name__, e)
print(json.dumps(out))
"""


def blocklist_until(lab):
    """{addr: seconds from now until the entry expires} as the monitors list them."""
    raw = lab.ceph(1, "osd", "blocklist", "ls", "-f", "json")
    arr, _ = json.JSONDecoder().raw_decode(raw.strip())   # 16.2: entries, then ranges
    now = datetime.now(timezone.utc)
    out = {}
    for e in arr:
        until = datetime.strptime(e["until"][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=timezone.utc)
        out[e["addr"]] = (until - now).total_seconds()
    return out


def test_blocklist_add_through_the_binding_keeps_the_expiry(lab):
    keyring = "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user
    entries = [("10.99.7.1:0/4242", 120), ("10.99.7.2:0/4343", 0.3),
               ("10.99.7.3:0/0", 120)]          # every client of a host: refused by us
    out = in_node(lab, BLOCKLIST % {"user": lab.ceph_user, "keyring": keyring,
                                    "entries": entries})
    assert out["10.99.7.1:0/4242"] == "ok" and out["10.99.7.2:0/4343"] == "ok", out
    assert out["10.99.7.3:0/0"].startswith("ValueError"), out
    until = blocklist_until(lab)
    assert 100 < until["10.99.7.1:0/4242"] <= 121, until
    # 0.3 s asked: a second, not the monitors' default hour (0 would mean that); it may
    # have expired already (the monitors purge expired entries at their next tick)
    assert until.get("10.99.7.2:0/4343", 0) <= 5, until
    assert "10.99.7.3:0/0" not in until
    lab.ceph(1, "osd", "blocklist", "rm", "10.99.7.1:0/4242")


def test_blocklist_add_refused_by_the_monitors_is_a_permission_error(lab):
    lab.ceph(1, "auth", "get-or-create", "client.vmceph-readonly", "mon", "allow r",
             "-o", "/run/vmceph-readonly.keyring")
    out = in_node(lab, BLOCKLIST % {"user": "vmceph-readonly",
                                    "keyring": "/run/vmceph-readonly.keyring",
                                    "entries": [("10.99.7.4:0/4444", 60)]})
    assert out["10.99.7.4:0/4444"].startswith("CephPermission"), out
    assert "10.99.7.4:0/4444" not in blocklist_until(lab)


@pytest.fixture
def pgless_pool(lab):
    """A pool whose one PG maps to no OSD: its crush rule starts at an empty root. Put
    back on the default rule afterwards (the PG peers, the health check clears).

    Such a PG stays 'unknown', which PG_AVAILABILITY reports only once it is stuck for
    mon_pg_stuck_threshold (60 s by default; measured here: 'pg 3.0 is stuck inactive
    for 60s, current state unknown, last acting []' after 59 s): the manager, which
    computes the PG checks, is told 5 s for the test."""
    lab.ceph(1, "config", "set", "mgr", "mon_pg_stuck_threshold", "5")
    for args in (("osd", "crush", "add-bucket", "vmceph-void", "root"),
                 ("osd", "crush", "rule", "create-replicated", "vmceph-void", "vmceph-void",
                  "host"),
                 ("osd", "pool", "create", POOL, "1", "1", "replicated", "vmceph-void"),
                 ("osd", "pool", "application", "enable", POOL, "rbd")):
        lab.ceph(1, *args)
    pool_id = [p["poolnum"] for p in json.loads(lab.ceph(1, "osd", "lspools", "-f", "json"))
               if p["poolname"] == POOL][0]
    yield pool_id
    lab.ceph(1, "config", "rm", "mgr", "mon_pg_stuck_threshold")
    lab.ceph(1, "osd", "pool", "set", POOL, "crush_rule", "replicated_rule")
    end = time.monotonic() + 60
    while time.monotonic() < end and "PG_AVAILABILITY" in lab.ceph(1, "health", "detail"):
        time.sleep(1)


def test_cephhealth_pools_from_pg_availability_is_yellow_never_red(lab, shared_dir,
                                                                   pgless_pool):
    # stub Pacemaker tools (this lab runs none): record what the agent publishes
    stubs = shared_dir / "pcmk-stubs"
    stubs.mkdir(exist_ok=True)
    log = stubs / "calls.log"
    for tool in ("attrd_updater", "crm_attribute"):
        (stubs / tool).write_text('#!/bin/sh\necho "%s $*" >> %s\n'
                                  'case "$*" in *" -G "*) exit 6;; esac\n' % (tool, log))
        (stubs / tool).chmod(0o755)
    health = Agent(lab, "CephHealth", "ceph-health-pgs", {
        "ceph_conf": "/etc/ceph/ceph.conf", "ceph_user": lab.ceph_user,
        "ceph_keyring": "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user,
        # every other check green: only the PG check of pools= can color the node
        "warn_color": "green", "err_color": "green", "dampen": "0s",
        "address_attribute": ""})
    env_path = {"PATH": "%s:/usr/sbin:/usr/bin:/sbin:/bin" % stubs}

    def published():
        calls = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("attrd")]
        return [c[4] for c in calls if c[3] in ("-U", "-B")][-1]

    # the monitors report the PG as inactive once the manager's PG map says so
    t0 = time.monotonic()
    line = None
    while time.monotonic() - t0 < 90 and line is None:
        detail = json.loads(lab.ceph(1, "health", "detail", "-f", "json"))
        check = detail.get("checks", {}).get("PG_AVAILABILITY") or {}
        line = next((d["message"] for d in check.get("detail", [])
                     if d["message"].startswith("pg %d." % pgless_pool)), None)
        time.sleep(1)
    assert line, "PG_AVAILABILITY never named pool %s's PG: %s" % (POOL, detail)
    print("PG_AVAILABILITY after %.0f s: %s" % (time.monotonic() - t0, line))

    for node in lab.indexes:
        r = lab.run(node, [health.path, "start"], check=False, timeout=60,
                    env=dict(_agent_env(health, {"pools": POOL}), **env_path))
        assert r.returncode == OCF_SUCCESS, r.stderr
        assert published() == "yellow", (node, r.stderr)
        assert "PGs not active: %s:%d.0" % (POOL, pgless_pool) in r.stderr, r.stderr
        assert "cluster-wide" in r.stderr
    # the same cluster, watching only rbd: the other pool's PG is not rbd's
    r = lab.run(1, [health.path, "monitor"], check=False, timeout=60,
                env=dict(_agent_env(health, {"pools": lab.pool}, interval_ms=10000),
                         **env_path))
    assert r.returncode == OCF_SUCCESS, r.stderr
    assert published() == "green", r.stderr


def _agent_env(agent, extra, interval_ms=0):
    env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": agent.instance,
           "OCF_RESOURCE_TYPE": "CephHealth", "OCF_RESOURCE_PROVIDER": "vmceph",
           "OCF_RESKEY_CRM_meta_timeout": "30000",
           "OCF_RESKEY_CRM_meta_interval": str(interval_ms), "HA_debug": "1"}
    env.update(("OCF_RESKEY_" + k, str(v)) for k, v in dict(agent.params, **extra).items())
    return env
