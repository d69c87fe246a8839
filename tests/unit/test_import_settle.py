"""``vmceph config import --apply`` must not restart the VM it switches to Ceph (issue 14).

The fake Pacemaker below plays what the lab showed (Pacemaker 2.1.5, node3's
pacemaker.log, 2026-12-01): changing ``config`` of the unmanaged resource makes the DC
reschedule its recurring monitors at once ("Parameters to 10000ms-interval monitor action
for vm2 on node2 changed ... (reschedule)"); a ``crm_resource --refresh`` while that monitor
is in flight deletes the resource from the executor, the result is never sent, and the DC
records the monitor as failed 90 s later ("Node node2 did not send monitor result (via
controller) within 90000ms", rc=1), then "Recover vm2": a stop and a start. Only a wait for
the cluster to settle (``crm_resource --wait``: no pending action left) between the change
and the refresh lets the monitor report first. Likewise the probes after the refresh must
have found the domain before the resource is managed again, or the scheduler, seeing it
nowhere, starts it.
"""

import pytest

pytest.importorskip("rados", reason="Debian's python3-rados (run with /usr/bin/python3)")

from test_defstore import cli, write, xml  # noqa: E402,F401  (the CLI on a RADOS fake)


class FakePacemaker:
    """One running resource on one node, as far as the import's commands can change it."""

    def __init__(self, config, real):
        self.real = real            # other programs (virt-xml-validate) run for real
        self.config, self.managed = config, True
        self.in_flight = False      # a rescheduled recurring monitor not yet reported
        self.probed = True          # the resource's state known (history present)
        self.restarts, self.calls = [], []
        self.wait_rc = 0            # 124: crm_resource --wait ran out of time

    def __call__(self, argv, timeout, **kw):
        from vmceph.bounded import CommandResult
        if argv[0] != "crm_resource":
            return self.real(argv, timeout, **kw)
        self.calls.append(argv)
        out = ""
        if "--get-parameter" in argv:
            out = self.config + "\n"
        elif "--wait" in argv:
            if self.wait_rc:
                return CommandResult(argv, self.wait_rc, "", "Timed out waiting\n")
            self.in_flight = False  # settled: every scheduled action has reported
            self.probed = True
        elif "--refresh" in argv:
            if self.in_flight:      # its result is lost: a failed monitor, then recovery
                self.restarts.append("monitor result lost by the refresh")
            self.in_flight, self.probed = False, False
        elif "--set-parameter" in argv:
            name, value = argv[argv.index("--set-parameter") + 1], argv[-1]
            if name == "is-managed":
                self.managed = value == "true"
                if self.managed and not self.probed:
                    self.restarts.append("managed before the probes found it")
            elif name == "config":
                if self.managed:
                    self.restarts.append("unique parameter changed while managed")
                self.config, self.in_flight = value, True
        return CommandResult(argv, 0, out, "")


@pytest.fixture
def pcmk(cli, monkeypatch):
    from vmceph import bounded
    fake = FakePacemaker(str(cli.tmp / "vm1.xml"), bounded.command)
    write(cli.tmp, "vm1.xml", xml())
    monkeypatch.setattr(bounded, "command", fake)
    return fake


def test_import_apply_lets_the_cluster_settle_so_nothing_restarts(cli, pcmk):
    rc, out, err = cli("config", "import", "--resource", "vm1", "--pool", "rbd", "--apply")
    assert rc == 0, err
    assert pcmk.config == "ceph:rbd/vm1" and pcmk.managed
    assert pcmk.restarts == [], pcmk.restarts
    assert "vm1 now uses ceph:rbd/vm1" in out


def test_import_apply_waits_long_enough_for_a_deep_monitor(cli, pcmk):
    """The rescheduled depth-20 monitor may take its whole 60 s timeout: each wait gets at
    least 120 s, more when --timeout says so."""
    assert cli("config", "import", "--resource", "vm1", "--pool", "rbd", "--apply")[0] == 0
    waits = [a for a in pcmk.calls if "--wait" in a]
    assert len(waits) == 2 and all("--timeout=120s" in a for a in waits), waits


def test_import_prints_the_waits_it_needs(cli):
    write(cli.tmp, "vm1.xml", xml())
    rc, out, err = cli("config", "import", str(cli.tmp / "vm1.xml"), "--resource", "vm1",
                       "--pool", "rbd")
    assert rc == 0, err
    update, refresh = out.index("resource update"), out.index("--refresh")
    first_wait = out.index("crm_resource --wait")
    second_wait = out.index("crm_resource --wait", first_wait + 1)
    assert update < first_wait < refresh < second_wait < out.index("resource manage"), out


def test_a_wait_that_runs_out_names_what_is_left_to_run(cli, pcmk):
    """Managing the resource again right after the change would restart the VM (the start's
    digest changed): the message lists the refresh and the waits too, not only 'manage'."""
    pcmk.wait_rc = 124
    rc, out, err = cli("config", "import", "--resource", "vm1", "--pool", "rbd", "--apply")
    assert rc != 0 and not pcmk.managed and pcmk.restarts == []
    left = err.split("finish with:")[1]
    assert left.index("crm_resource --wait") < left.index("--refresh") \
        < left.index("pcs resource manage vm1"), err
