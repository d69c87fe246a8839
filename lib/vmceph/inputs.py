"""Checks of values that name something outside the agent, as that something reads them.

validate-all is the gate (issue 16): what it accepts, every action must handle. Two values
passed it and failed later because only the program that consumes them knows the rules:

- a domain XML ``<uuid>`` libvirt refuses: start, probe, monitor, stop and migrate_from all
  failed with "Invalid UUID" (``lookupByUUIDString``); ``libvirt_uuid`` is libvirt's own
  parsing rule (virUUIDParse), checked against the test driver: 32 hex digits, '-' or ' '
  allowed between digit pairs, leading and trailing white space ignored;
- a ``ceph.conf`` librados cannot parse (binary, /etc/passwd, a '$include' line): start
  answered 5 where 6 fits; ``ceph_conf_problem`` asks librados itself, without connecting.
"""

import os

_HEX = "0123456789abcdefABCDEF"


def libvirt_uuid(text):
    """The canonical form (8-4-4-4-12, lower case) of a UUID libvirt accepts, else None."""
    if not text or not isinstance(text, str):
        return None
    s = text.lstrip()
    digits, i = [], 0
    while len(digits) < 32:
        if i >= len(s):
            return None
        c = s[i]
        if c in "- ":
            i += 1
            continue
        if c not in _HEX or i + 1 >= len(s) or s[i + 1] not in _HEX:
            return None
        digits += [c, s[i + 1]]
        i += 2
    if s[i:].strip():
        return None
    h = "".join(digits).lower()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


PARSE_TIMEOUT_S = 5.0


def ceph_conf_problem(path, timeout=PARSE_TIMEOUT_S, rados_mod=None):
    """None if librados parses ``path``; else (kind, sentence) with kind "missing" (not on
    this node) or "invalid" (no node can use it). The caller has checked that ``path`` is
    a regular file (a FIFO would block librados' open). Bounded: a conf file on a hung
    network file system must not hang validation."""
    from vmceph import bounded
    if rados_mod is None:
        try:
            import rados as rados_mod
        except ImportError:
            return None  # the caller's module check names the missing package

    def parse():
        # a bare Rados() only reads the file: no connection, no thread to the monitors
        r = rados_mod.Rados(conffile=path, conf={"admin_socket": "", "log_to_stderr": "false",
                                                 "err_to_stderr": "false"})
        try:
            r.shutdown()
        except Exception:  # shutting down an unconnected handle: nothing to release
            pass

    try:
        bounded.call(parse, timeout, "reading %s" % path)
    except bounded.Timeout:
        return "missing", "librados did not finish reading it within %.0f s" % timeout
    except rados_mod.ObjectNotFound:
        return "missing", "librados cannot open it on this node"
    except rados_mod.Error as e:
        return "invalid", "librados cannot parse it (%s): not a Ceph configuration file" % e
    finally:
        restore_blocking_stdio()
    return None


def restore_blocking_stdio():
    """librados' Rados() sets O_NONBLOCK on the inherited standard descriptors (flags
    04001 seen on stdout and stderr after it): print() to a full pipe then fails or cuts a
    line. Clear it again."""
    import fcntl
    for fd in (0, 1, 2):
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if flags & os.O_NONBLOCK:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        except OSError:
            pass
