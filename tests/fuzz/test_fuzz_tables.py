"""Table-driven fuzzing: every parameter of both agents with every hostile value, and every
OCF environment variable with every hostile value, each with validate-all and an action,
as whole processes, two at a time (both cores). The invariants and the gate are those of
test_fuzz_agents. The full tables are ``long`` (make fuzz); make test runs every 21st row
(21 is prime to the rounds of actions, so the sample still covers every action).
"""

import concurrent.futures
import os

import pytest

import harness
from harness import agent, agreement, problems
from test_fuzz_agents import ENV_CHOICES, HOSTILE, VALID, _resolve
from vmceph.cephhealth import SPEC as HEALTH_SPEC
from vmceph.rbdvd_params import SPEC as RBD_SPEC

RBD, HEALTH = "RBDVirtualDomain", "CephHealth"
RBD_ROUND = ["stop", "start", "monitor-recurring", "migrate_from", "monitor"]
HEALTH_ROUND = ["stop", "monitor-recurring", "start", "monitor"]


def _param_rows():
    rows = []
    for name, spec, rounds in ((RBD, RBD_SPEC, RBD_ROUND), (HEALTH, HEALTH_SPEC, HEALTH_ROUND)):
        i = 0
        for p in spec.params:
            for value in HOSTILE + VALID.get(p.name, []):
                rows.append((name, {"OCF_RESKEY_" + p.name: value}, rounds[i % len(rounds)]))
                i += 1
    return rows


def _env_rows():
    rows = []
    for name, rounds in ((RBD, ["stop", "validate-all", "monitor", "monitor-recurring",
                                "meta-data", "start"]),
                         (HEALTH, ["stop", "validate-all", "monitor", "monitor-recurring",
                                   "meta-data"])):
        for var, values in sorted(ENV_CHOICES.items()):
            for value in values:
                for action in rounds:
                    if var == "OCF_RESKEY_CRM_meta_timeout" and action in ("start",
                                                                           "monitor-recurring"):
                        continue  # these wait for Ceph for their whole (default) timeout
                    rows.append((name, {var: value}, action))
    return rows


SAMPLE = 21
PARAM_ROWS = _param_rows()
ENV_ROWS = _env_rows()


def _env(world, name, overrides, serial):
    e = dict(harness.BASE_ENV)
    e.update({b"OCF_RESOURCE_INSTANCE": b"tb%d" % serial,
              b"HA_RSCTMP": os.path.join(world.rsctmp, "tb%d" % serial).encode(),
              b"OCF_RESKEY_ceph_conf": world.ceph_conf.encode(),
              b"OCF_RESKEY_CRM_meta_migrate_source": b"n1"})
    if name == RBD:
        e[b"OCF_RESKEY_config"] = world.dom.encode()
        e[b"OCF_RESKEY_hypervisor"] = b"test:///default"
    for k, v in overrides.items():
        if v is None:
            e.pop(k.encode(), None)
        else:
            e[k.encode()] = harness.b(_resolve(world, v))
    return e


def _one(world, row, serial):
    name, overrides, action = row
    e = _env(world, name, overrides, serial)
    act = action
    if action == "monitor-recurring":
        act = "monitor"
        e.setdefault(b"OCF_RESKEY_CRM_meta_interval", b"10000")
    if action in ("start", "migrate_from", "monitor-recurring"):
        if b"OCF_RESKEY_CRM_meta_timeout" in e and "OCF_RESKEY_CRM_meta_timeout" not in overrides:
            e[b"OCF_RESKEY_CRM_meta_timeout"] = b"2000"
    v = agent(name, "validate-all", e)
    r = agent(name, act, e)
    found = ["validate-all: " + p for p in problems(v, "validate-all")]
    found += ["%s: %s" % (action, p) for p in problems(r, act)]
    if act not in ("meta-data", "monitor"):
        found += agreement(v, act, r)
    return ["%s %s %s: %s\n  validate-all: %s\n  %s: %s" % (
        name, action, {k: harness._short(harness.b(x), 60) for k, x in overrides.items()},
        found, v.describe(), action, r.describe())] if found else []


def _run_rows(world, rows):
    findings = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for f in pool.map(lambda ir: _one(world, ir[1], ir[0]), enumerate(rows)):
            findings += f
    assert not findings, "%d finding(s):\n%s" % (len(findings), "\n".join(findings[:10]))


def test_every_parameter_sample(world):
    _run_rows(world, PARAM_ROWS[::SAMPLE])


def test_every_environment_variable_sample(world):
    _run_rows(world, ENV_ROWS[::SAMPLE])


@pytest.mark.long
def test_every_parameter_with_every_hostile_value(world):
    _run_rows(world, PARAM_ROWS)


@pytest.mark.long
def test_every_environment_variable_with_every_hostile_value(world):
    _run_rows(world, ENV_ROWS)
