"""save_config_on_stop / sync_config_on_stop: write the running domain's definition back to
its config file, as ocf:heartbeat:VirtualDomain does at stop, migrate_to, migrate_from and
every recurring monitor, so the file on every node follows changes made while it runs
(virsh edit, attach-device --config).

Only when it changed (a monitor every few seconds must not rewrite the file, and csync2
would then copy it every time), only a definition that is plausibly complete and of this
domain (libvirt's own output, read back: parsed, same name and UUID), and through
rbdvd.write_keeping: atomic, a symbolic link stays a link, mode and owner kept, never
readable by others (it may hold secrets). Best-effort everywhere: a failure is a warning,
never the action's failure (a config on unmounted shared storage must not stop a stop).

Imported by the actions that save (never on the depth-0 monitor path unless the
parameter is set).
"""

import os

from vmceph import bounded, virt


def wanted(params):
    """True if either parameter asks for saving (sync implies save, as in VirtualDomain);
    a value that does not parse counts as false."""
    from vmceph.ocf import OCFError
    try:
        return bool(params.save_config_on_stop or params.sync_config_on_stop)
    except OCFError:
        return False


def problem_of(xml, ident):
    """Why ``xml`` must not replace the config file of domain ``ident``, or None."""
    from vmceph.domxml import DomainXMLError, parse_domain
    if not xml or not xml.strip():
        return "libvirt returned an empty definition"
    try:
        dom = parse_domain(xml.encode("utf-8"), source="running definition")
    except DomainXMLError as e:
        return str(e)
    if dom.name != ident.name:
        return "it is the definition of domain %r, not %r" % (dom.name, ident.name)
    if ident.uuid and dom.uuid and dom.uuid.lower() != ident.uuid.lower():
        return "its UUID %s is not the domain's %s" % (dom.uuid, ident.uuid)
    return None


def _same(path, text):
    try:
        with open(path, "rb") as f:
            return f.read() == text.encode("utf-8")
    except OSError:
        return False


def save(ctx, hv, vdom, ident, why):
    """Write the running definition of ``vdom`` to the config file if it changed; True if
    written. ``why`` names the action in the log."""
    from vmceph.defstore import is_uri
    from vmceph.rbdvd import write_keeping
    config = ident.config or ctx.params.raw("config")
    if not config:
        return False
    if is_uri(config):
        ctx.log.info("save_config_on_stop: %s is a definition in Ceph, not a file: not "
                     "written back (change it with 'vmceph config edit')", config)
        return False
    share = max(0.5, min(20.0, ctx.deadline.remaining() / 6))
    try:
        xml = hv.xml_desc(vdom, secure=True, inactive=True, cap=share)
        problem = problem_of(xml, ident)
        if problem:
            ctx.log.warning("%s: not saving the configuration of %s to %s: %s", why,
                            ident.name, config, problem)
            return False
        # the file system may hang (NFS): the comparison and the write are bounded too
        if bounded.call(lambda: _same(config, xml), share, "read " + config):
            ctx.log.debug("%s: configuration of %s unchanged", why, ident.name)
            return False
        bounded.call(lambda: write_keeping(config, xml, None, secret=True),
                     max(0.5, min(share, ctx.deadline.remaining() / 6)), "write " + config)
    except (OSError, bounded.Timeout, virt.VirtError) as e:
        ctx.log.warning("%s: cannot save the configuration of %s to %s (%s)", why,
                        ident.name, config, e)
        return False
    ctx.log.info("%s: saved the running configuration of %s to %s", why, ident.name, config)
    if _sync_wanted(ctx):
        sync(ctx, config)
    return True


def _sync_wanted(ctx):
    from vmceph.ocf import OCFError
    try:
        return bool(ctx.params.sync_config_on_stop)
    except OCFError:
        return False


def sync(ctx, config):
    """csync2 -x for the config file alone: the other files csync2 manages are not this
    resource's to push (a full -x would also copy whatever else changed on this node)."""
    # a symbolic link: the file written is its target, which csync2 may be the one to know
    paths = [config] + ([os.path.realpath(config)] if os.path.islink(config) else [])
    try:
        r = bounded.command(["csync2", "-x"] + paths, ctx.deadline.at_most(20.0), log=ctx.log)
        if r.rc != 0:
            ctx.log.warning("csync2 -x %s failed (rc %d): %s", " ".join(paths), r.rc,
                            r.err.strip()[:200])
    except (FileNotFoundError, bounded.Timeout) as e:
        ctx.log.warning("csync2 -x %s: %s", " ".join(paths), e)


def save_by_name(ctx, ident, uri, why):
    """save() for an action that has no libvirt connection of its own (the monitor)."""
    hv = virt.Hypervisor(uri, ctx.deadline, ctx.log)
    try:
        vdom = hv.lookup(ident.name, ident.uuid)
        return save(ctx, hv, vdom, ident, why)
    except virt.VirtError as e:
        # libvirtd down: the monitor answers from the QEMU process; no warning every time
        level = ctx.log.debug if isinstance(e, virt.LibvirtUnreachable) else ctx.log.warning
        level("%s: cannot save the configuration of %s: %s", why, ident.name, e)
        return False
    finally:
        hv.close()
