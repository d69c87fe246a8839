"""Issue 16 on the real lab: stop stops a running RBD-backed VM whatever its configuration
became, validate-all refuses what start would fail on (with the code start gives), and no
hostile value makes the agent run a program. (The whole-process fuzz of tests/fuzz does
the same against libvirt's test driver; this is the real libvirtd, QEMU and Ceph.)"""

import time

from conftest import OCF_ROOT, Result


def run_agent(lab, vm, node, action, params=None, env=None, timeout_ms=60000):
    """Like conftest.Agent, with raw environment variables too (HA_RSCTMP, HA_LOGFILE)."""
    e = {"OCF_ROOT": OCF_ROOT, "OCF_RESOURCE_INSTANCE": vm.agent.instance,
         "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms), "HA_debug": "1"}
    for k, v in dict(vm.agent.params, **(params or {})).items():
        e["OCF_RESKEY_" + k] = v
    e.update(env or {})
    t0 = time.monotonic()
    p = lab.run(node, [vm.agent.path, action], env=e, check=False,
                timeout=timeout_ms / 1000.0 + 30)
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def test_stop_stops_a_running_vm_whatever_the_configuration(lab, make_vm):
    vm = make_vm(disks=1)
    r = vm.agent(1, "start")
    assert r.rc == 0, r
    assert vm.running_on() == [1]
    fifo = "/tmp/vmceph-it-fifo"
    lab.run(1, "rm -f %s; mkfifo %s" % (fifo, fifo))
    # every value below failed validation or blocked before issue 16; stop must still
    # find the domain (remembered at start) and stop it, fast, without a traceback
    hostile = {"hypervisor": "qemu:///sys\udcfftem", "snapshot": fifo,
               "force_stop": "Yes", "migrateport": "65536", "ceph_conf": fifo,
               "monitor_scripts": "./relative.sh", "shutdown_mode": "bogus"}
    r = run_agent(lab, vm, 1, "stop", hostile, {"HA_LOGFILE": fifo}, timeout_ms=60000)
    assert r.rc == 0, r
    assert vm.running_on() == [], r
    assert "Traceback" not in r.stderr and r.elapsed < 50, r
    assert "not logging to it" in r.stderr, r
    # and with nothing running, stop is 0 again, with the state directory a file
    r = run_agent(lab, vm, 1, "stop", hostile, {"HA_RSCTMP": "/etc/hostname"})
    assert r.rc == 0 and "Traceback" not in r.stderr, r


def test_validate_all_refuses_what_start_would_fail_on(lab, make_vm):
    vm = make_vm(disks=1)
    for params, code, words in (({"ceph_conf": "/etc/passwd"}, 6, "ceph_conf"),
                                ({"migrateport": "70000"}, 6, "migrateport"),
                                ({"ceph_user": "\udcff"}, 6, "UTF-8"),
                                ({"monitor_scripts": "/nonexistent.sh"}, 5, "monitor_scripts")):
        v = run_agent(lab, vm, 1, "validate-all", params)
        s = run_agent(lab, vm, 1, "start", params)
        assert (v.rc, s.rc) == (code, code), (params, v, s)
        assert words in v.reason and words in s.reason, (v, s)
        assert vm.running_on() == []
    # what validate-all accepts, start does
    assert run_agent(lab, vm, 1, "validate-all").rc == 0
    r = run_agent(lab, vm, 1, "start")
    assert r.rc == 0, r
    assert run_agent(lab, vm, 1, "stop").rc == 0


def test_ext_transport_never_runs_its_program(lab, make_vm):
    vm = make_vm(disks=1)
    marker = "/tmp/vmceph-it-ext-marker"
    lab.run(1, ["rm", "-f", marker])
    uri = "qemu+ext:///system?command=/usr/bin/touch%20" + marker
    v = run_agent(lab, vm, 1, "validate-all", {"hypervisor": uri})
    assert v.rc == 6 and "allow_ext_transport" in v.reason, v
    assert run_agent(lab, vm, 1, "monitor", {"hypervisor": uri}).rc == 7  # a probe
    assert run_agent(lab, vm, 1, "stop", {"hypervisor": uri}).rc == 0
    assert lab.run(1, ["test", "-e", marker], check=False).returncode == 1
