"""virt.quick_state: the monitor's libvirt query through the C extension module directly.

A fake ``libvirtmod`` answers like the real one: None on failure with the error readable
from virGetLastError() as its 9-tuple (code, domain, message, level, str1, str2, str3,
int1, int2). The real path is exercised against a real libvirtd by the integration tests.
"""

import sys
import types

import pytest

from vmceph import virt

VIR_ERR_NO_DOMAIN, VIR_FROM_QEMU, VIR_FROM_RPC, VIR_ERR_SYSTEM_ERROR = 42, 10, 7, 38


def fake_libvirtmod(domains, connect_error=None):
    """domains: {name: (uuid, state, reason)}."""
    mod = types.ModuleType("libvirtmod")
    last = {}
    calls = []

    def fail(code, domain, msg):
        last["err"] = (code, domain, msg, 2, None, None, None, 0, 0)
        return None

    def virConnectOpen(uri):
        calls.append(("open", uri))
        if connect_error:
            return fail(*connect_error)
        return "conn"

    def lookup(key, value):
        for name, (uuid, state, reason) in domains.items():
            if (name if key == "name" else uuid) == value:
                return ("dom", name)
        return fail(VIR_ERR_NO_DOMAIN, VIR_FROM_QEMU, "Domain not found: %s" % value)

    mod.virRegisterErrorHandler = lambda f, ctx: calls.append(("handler",)) or 1
    mod.virGetLastError = lambda: last.get("err")
    mod.virConnectOpen = virConnectOpen
    mod.virConnectClose = lambda c: calls.append(("close", c)) or 0
    mod.virDomainLookupByUUIDString = lambda c, u: lookup("uuid", u)
    mod.virDomainLookupByName = lambda c, n: lookup("name", n)
    mod.virDomainGetState = lambda d, flags: list(domains[d[1]][1:])
    mod.virDomainFree = lambda d: calls.append(("free", d[1])) or 0
    mod.calls = calls
    return mod


@pytest.fixture
def use(monkeypatch):
    def install(mod):
        monkeypatch.delitem(sys.modules, "libvirt", raising=False)
        monkeypatch.setitem(sys.modules, "libvirtmod", mod)
        return mod
    return install


def test_running_domain_by_uuid(use):
    mod = use(fake_libvirtmod({"vm1": ("u-1", virt.RUNNING, 1)}))
    assert virt.quick_state("qemu:///system", "vm1", "u-1", 5.0) == (virt.RUNNING, 1)
    assert ("free", "vm1") in mod.calls and ("close", "conn") in mod.calls
    assert ("handler",) in mod.calls, "libvirt's default handler would print to stderr"


def test_uuid_unknown_falls_back_to_name(use):
    use(fake_libvirtmod({"vm1": ("other-uuid", virt.PAUSED, virt.PAUSED_IOERROR)}))
    assert virt.quick_state("qemu:///system", "vm1", "u-1", 5.0) == (virt.PAUSED,
                                                                     virt.PAUSED_IOERROR)


def test_unknown_domain_is_shut_off(use):
    use(fake_libvirtmod({}))
    assert virt.quick_state("qemu:///system", "vm1", None, 5.0) == (virt.SHUTOFF, 0)


def test_unreachable_libvirtd_is_never_not_running(use):
    use(fake_libvirtmod({}, connect_error=(VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC,
                                           "Failed to connect socket")))
    with pytest.raises(virt.LibvirtUnreachable, match="Failed to connect socket"):
        virt.quick_state("qemu:///system", "vm1", "u-1", 5.0)


def test_no_time_left_is_unreachable(use):
    use(fake_libvirtmod({"vm1": ("u-1", virt.RUNNING, 1)}))
    with pytest.raises(virt.LibvirtUnreachable):
        virt.quick_state("qemu:///system", "vm1", "u-1", 0.0)


def test_real_libvirtmod_has_the_functions_used():
    real = pytest.importorskip("libvirtmod")
    for fn in ("virRegisterErrorHandler", "virGetLastError", "virConnectOpen", "virConnectClose",
               "virDomainLookupByUUIDString", "virDomainLookupByName", "virDomainGetState",
               "virDomainFree"):
        assert callable(getattr(real, fn)), fn
