"""The README's quick-start block can be found and run as tests/e2e/test_readme_quickstart.py
runs it (no lab here): one marked block, valid shell, every name it uses overridable."""

import subprocess

from vmlab import quickstart


def test_one_marked_block_of_valid_shell():
    text = quickstart.block()
    assert "pcs resource create" in text and "ocf:vmceph:RBDVirtualDomain" in text
    p = subprocess.run(["bash", "-n"], input=text, universal_newlines=True,
                       stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr


def test_names_come_from_variables_the_e2e_test_sets():
    names = quickstart.variables(quickstart.block())
    # the e2e test sets exactly these (tests/e2e/test_readme_quickstart.py)
    assert set(names) == {"CEPH_USER", "POOL", "VM", "TO_NODE", "VM_XML"}, names
    assert names["VM"] == "vm1" and names["VM_XML"] == "/etc/vmceph/domains/$VM.xml"


def test_block_expands_to_the_commands_with_the_given_names(tmp_path):
    """Run with stub pcs/crm that print their arguments: every command gets the
    environment's names, none the README's defaults."""
    for tool in ("pcs", "crm", "crm_resource"):
        stub = tmp_path / tool
        stub.write_text('#!/bin/sh\necho "%s $*"\n' % tool)
        stub.chmod(0o755)
    env = {"PATH": "%s:/usr/bin:/bin" % tmp_path, "CEPH_USER": "u1", "POOL": "p1",
           "VM": "vmx", "TO_NODE": "nodex", "VM_XML": "/x/vmx.xml"}
    p = subprocess.run(["bash", "-eu", "-c", quickstart.block()], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=30)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "ceph_user=u1 pools=p1" in out
    assert "pcs resource create vmx ocf:vmceph:RBDVirtualDomain config=/x/vmx.xml" in out
    assert "crm resource move vmx nodex" in out
    # the move comes once the VM runs (moving it to where it already runs is an error)
    assert out.index("crm_resource --wait") < out.index("crm resource move")
    assert "vm1" not in out and "vmceph " not in out
    # the clone's meta right after the clone id (pcs 0.11 puts a later 'meta' on the
    # primitive: issue 13)
    assert "clone ceph-health-clone allow-unhealthy-nodes=true interleave=true" in out
