"""vmceph: Pacemaker resource agents for KVM virtual machines whose disks are Ceph RBD images.

The version below is the one place the project's version is defined: setup.cfg, the
agents' meta-data, the Debian changelog check and the RPM spec all read it from here.
"""

__version__ = "0.1.0"
