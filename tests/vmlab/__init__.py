"""vmlab: a throw-away hyperconverged cluster (Ceph + libvirt/QEMU + optional Pacemaker)
on one machine, each node a set of Linux namespaces. See README.md beside this file.

    from vmlab import Lab
    lab = Lab(name="it", nodes=3, pacemaker=False)
    lab.up()
    ...
    lab.down()
"""

from .lab import Lab
from .layout import SECRET_UUID
from .nodefiles import FENCE_ID
from .util import CommandError, CommandTimeout, LabError

__all__ = ["Lab", "LabError", "CommandError", "CommandTimeout", "SECRET_UUID", "FENCE_ID"]
