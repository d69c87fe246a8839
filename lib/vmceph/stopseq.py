"""The stop sequence of ocf:vmceph:RBDVirtualDomain (its stop action, and stop with an
invalid configuration): save the configuration and the guest's memory if asked (side tasks,
each best-effort within a share of the deadline), shut the guest down gracefully, destroy
it, wait until it is gone; without libvirt, signal its QEMU directly. Stop never depends on
Ceph and works with a partly invalid configuration (LenientParams).

Imported by the agent only when it stops a domain: never on the depth-0 monitor path.
"""

import os

from vmceph import virt
from vmceph.ocf import OCF_SUCCESS, GenericError, OCFError, Share
from vmceph.rbdvd import LenientParams, forget, snapshot_file, write_keeping

SHUTDOWN_MODES = {  # virDomainShutdownFlagValues
    "acpi": 1, "agent": 2, "initctl": 4, "signal": 8, "paravirt": 16,
}


class StopSequence:
    """One stop of a domain. ``domain_of(ctx)`` is the agent's parsed, resolved domain
    (read only to find the image whose generation a memory save records)."""

    def __init__(self, domain_of):
        self._domain_of = domain_of
        self.partial = None   # what a failed or abandoned save may have left
        self.never_resumed = None   # why a paused domain here never ran (createmark)

    def run(self, ctx, ident, uri):
        from vmceph import createmark
        hv = virt.Hypervisor(uri, ctx.deadline, ctx.log)
        try:
            try:
                mark = createmark.read(ctx)
                orphan = createmark.orphaned(mark)
                if orphan:
                    self._await_create(ctx, hv, ident, orphan)
                    self.never_resumed = orphan
                dom = hv.lookup(ident.name, ident.uuid)
            except virt.DomainNotFound:
                forget(ctx)
                self._after_dead_start(ctx, ident, mark if orphan else None)
                self._release_dead_clients(ctx)
                return OCF_SUCCESS
            except virt.LibvirtUnreachable as e:
                return self._stop_without_libvirt(ctx, ident, e)
            rc = self._stop_domain(ctx, hv, dom, ident)
        except virt.LibvirtUnreachable as e:
            return self._stop_without_libvirt(ctx, ident, e)
        except virt.VirtError as e:
            raise GenericError("stop of %s failed: %s" % (ident.name, e)) from None
        finally:
            hv.close()
        if rc == OCF_SUCCESS:
            forget(ctx)
            self._after_dead_start(ctx, ident, mark if orphan else None)
        return rc

    def _after_dead_start(self, ctx, ident, mark):
        """The domain is stopped here: release what the QEMU of a start that died in its
        create left in Ceph (vmceph.createmark.release; a side task within a share of the
        deadline, never failing the stop), then drop the mark."""
        from vmceph import bounded, createmark, deadclients
        if mark is not None and virt.qemu_pid_of(ident.name) is None:
            share = Share(ctx.deadline, deadclients.RELEASE_SHARE, deadclients.RELEASE_CAP_S)
            try:
                bounded.call(lambda: createmark.release(ctx, LenientParams(ctx), share, mark),
                             share.remaining() + 1.0, "releasing a dead start's QEMU clients")
            except Exception as e:   # noqa: BLE001 - a side task never fails a stop
                ctx.log.warning("releasing the clients of a dead start's QEMU failed: %s", e)
        createmark.clear(ctx)

    def _await_create(self, ctx, hv, ident, orphan):
        """A start died during its create (vmceph.createmark): wait, within half of what is
        left, until libvirt's create has an outcome, so that what it made is stopped here
        rather than left paused, holding the images, after this stop said "stopped"."""
        from vmceph import createmark

        def look():
            try:
                dom = hv.lookup(ident.name, ident.uuid)
            except virt.DomainNotFound:
                return createmark.ABSENT
            if hv.state_of(dom)[0] in virt.LIVE_STATES:
                return createmark.SETTLED
            try:
                return createmark.SETTLED if hv.is_persistent(dom) else createmark.STARTING
            except virt.DomainNotFound:
                return createmark.ABSENT
        budget = min(createmark.SETTLE_CAP_S, ctx.deadline.remaining() / 2)
        seen, waited = createmark.settle(look, budget)
        if seen == createmark.STARTING:
            # not "stopped" on a guess: a QEMU may appear right after this stop
            raise GenericError("%s, and libvirt is still creating domain %s after %.0f s: "
                               "cannot tell whether it will run here" % (orphan, ident.name,
                                                                        waited))
        ctx.log.warning("%s; waited %.1f s for libvirt's create to finish: %s", orphan, waited,
                        "the domain exists" if seen == createmark.SETTLED else
                        "no domain appeared")

    def _stop_domain(self, ctx, hv, dom, ident):
        p = LenientParams(ctx)
        state, reason = hv.state_of(dom)
        if state not in virt.LIVE_STATES:
            self._release_dead_clients(ctx)
            return OCF_SUCCESS
        force = bool(p.get("force_stop"))
        if state == virt.PAUSED and reason == virt.PAUSED_MIGRATION:
            # the target's side of a migration that failed (Pacemaker stops both sides,
            # then starts one): its guest never ran here, and a paused guest answers no
            # shutdown request; the chaos soak's stops waited out 2/3 of their timeout
            # before destroying it (docs/reliability.md, seed 1205, faults 14 and 26)
            ctx.log.warning("domain %s is paused for a migration (an incoming one whose "
                            "migration failed, or a source paused at its end): destroying "
                            "it", ident.name)
            force = True
        elif state == virt.PAUSED and self.never_resumed:
            # created paused by a start that died before its resume: no vCPU ever ran,
            # there is nothing to shut down or save (a shutdown request to a paused guest
            # would only wait out 2/3 of the stop's timeout)
            ctx.log.warning("%s; domain %s was never resumed: destroying it",
                            self.never_resumed, ident.name)
            force = True
        elif state == virt.CRASHED:
            # its QEMU still holds the images: nothing to save, nothing to ask, destroy it
            ctx.log.warning("domain %s crashed (kept by on_crash=preserve): destroying it",
                            ident.name)
            force = True
        else:
            # Side tasks: best-effort, each within a share of the deadline. A failure is
            # logged and the stop goes on: failing here would have Pacemaker fence the node
            # and every VM on it for want of a config copy or a memory image.
            if p.get("save_config_on_stop") or p.get("sync_config_on_stop"):
                save_config(ctx, hv, dom, ident)
            saved = snapshot_file(p.get("snapshot"), ident.name)
            if saved:
                outcome = self._save_state(ctx, hv, dom, ident, saved)
                if outcome == "saved":
                    return OCF_SUCCESS
                force = force or outcome == "abandoned"
        if not force:
            if self._graceful(ctx, hv, dom, ident, p.get("shutdown_mode") or ""):
                return OCF_SUCCESS
        ctx.log.info("destroying domain %s", ident.name)
        try:
            hv.destroy(dom)
        except virt.DomainNotFound:
            return OCF_SUCCESS
        except virt.VirtOperationFailed as e:
            ctx.log.warning("destroy of %s: %s", ident.name, e)
        rc = self._wait_inactive(ctx, hv, dom, ident, ctx.deadline.remaining())
        partial = self.partial
        if partial:  # a save that failed or was abandoned may have left part of a file
            from vmceph import generation
            for err in generation.discard(partial):
                ctx.log.warning("cannot delete what the failed save left: %s", err)
        if rc == OCF_SUCCESS:
            # A destroyed QEMU may leave its lock: libvirt sends SIGKILL to a QEMU that
            # has not exited 10 s after SIGTERM, and a start killed mid-way left one that
            # the chaos soak's next start elsewhere met ("agent-kill-start",
            # docs/reliability.md). A graceful shutdown closes the images: no Ceph then.
            self._release_dead_clients(ctx)
        return rc

    def _save_state(self, ctx, hv, dom, ident, saved):
        """Save the guest's memory to ``saved`` with the disk's generation next to it
        (vmceph.generation). 'saved', 'failed' (go on with a shutdown) or 'abandoned' (the
        save did not answer within its share: libvirt may still be at it, and a shutdown
        would wait for its job; destroy at once)."""
        from vmceph import bounded, generation
        token = self._current_generation(ctx)
        share = max(1.0, ctx.deadline.remaining() / 2)
        try:
            bounded.call(lambda: os.makedirs(os.path.dirname(saved), exist_ok=True),
                         min(5.0, share), "mkdir " + os.path.dirname(saved))
            hv.save(dom, saved, cap=share)
        except (OSError, bounded.Timeout, virt.VirtError) as e:
            state, _ = state_or_unknown(hv, dom)
            if state is not None and state not in virt.LIVE_STATES:
                # the save finished as we gave up on it: it is the guest's state
                ctx.log.warning("saving %s to %s answered late (%s) but the domain is "
                                "gone", ident.name, saved, e)
            else:
                ctx.log.warning("cannot save the memory of %s to %s (%s): stopping it "
                                "without saving", ident.name, saved, e)
                self.partial = saved
                abandoned = isinstance(e, (bounded.Timeout, virt.CallTimeout))
                return "abandoned" if abandoned else "failed"
        if token is not None:
            try:
                bounded.call(lambda: generation.write_recorded(saved, token),
                             ctx.deadline.at_most(5.0), "write " + generation.sidecar(saved))
            except (OSError, bounded.Timeout) as e:
                ctx.log.warning("cannot record the generation of %s (%s): the next start "
                                "will discard it", saved, e)
        ctx.log.info("domain %s saved to %s (generation %s)", ident.name, saved,
                     token or "unknown: the next start will discard it")
        return "saved"

    def _current_generation(self, ctx):
        """The generation of the first guarded image, asked within a tenth of the stop's
        time; None if it cannot be told (stop never depends on Ceph)."""
        from vmceph import bounded, generation
        p = LenientParams(ctx)
        try:
            dom = self._domain_of(ctx)
            specs = [d.spec for d in dom.guarded_disks]
        except OCFError as e:
            ctx.log.warning("cannot read the disks of the domain (%s): saving its memory "
                            "without a generation", e.reason)
            return None
        if not specs:
            return None
        from vmceph.ceph import CephError, CephSession

        def ask():
            session = CephSession(p.get("ceph_conf"), p.get("ceph_user"),
                                  p.get("ceph_keyring"), Share(ctx.deadline, 0.1), ctx.log)
            session.connect()
            try:
                return session.image_meta_get(specs[0], generation.META_KEY)
            finally:
                session.close()
        try:
            return bounded.call(ask, max(0.5, ctx.deadline.remaining() / 10), "generation")
        except (CephError, bounded.Timeout) as e:
            ctx.log.warning("cannot read the generation of %s (%s): saving the memory "
                            "without one", specs[0], e)
            return None

    def _graceful(self, ctx, hv, dom, ident, mode):
        """Ask the guest to shut down; wait for 2/3 of what is left (the rest is for
        destroy). True if it went down."""
        import time
        flags = 0
        for m in mode.split(","):
            if m.strip():
                flags |= SHUTDOWN_MODES[m.strip()]
        try:
            hv.shutdown(dom, flags)
        except virt.DomainNotFound:
            return True
        except virt.VirtOperationFailed as e:
            ctx.log.warning("graceful shutdown of %s refused: %s", ident.name, e)
            return False
        grace = ctx.deadline.remaining() * 2 / 3
        ctx.log.info("asked %s to shut down (mode %s); waiting up to %.0f s", ident.name,
                     mode or "default", grace)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if not active(hv, dom):
                return True
            # never past the grace: the rest of the deadline is destroy's
            time.sleep(max(0.0, min(0.5, end - time.monotonic())))
        ctx.log.warning("%s did not shut down within %.0f s", ident.name, grace)
        return False

    def _wait_inactive(self, ctx, hv, dom, ident, seconds):
        import time
        end = time.monotonic() + seconds
        while True:
            if not active(hv, dom):
                return OCF_SUCCESS
            # stop asking while a query still has time: one made with nothing left would
            # time out at once and read as "libvirt unreachable"
            left = end - time.monotonic()
            if left <= 0.2:
                raise GenericError("domain %s is still running after destroy; the node must "
                                   "be fenced" % ident.name)
            time.sleep(min(0.1, left - 0.2))

    def _stop_without_libvirt(self, ctx, ident, error):
        """libvirtd is down: stop the QEMU process itself rather than fail (which fences the
        node) or succeed on a guess (which risks two writers)."""
        import signal
        pid = virt.qemu_pid_of(ident.name)
        if pid is None:
            ctx.log.warning("libvirt unreachable (%s); no QEMU process of %s: stopped",
                            error, ident.name)
            forget(ctx)
            self._release_dead_clients(ctx)
            return OCF_SUCCESS
        ctx.log.warning("libvirt unreachable (%s); terminating QEMU of %s (pid %d) directly",
                        error, ident.name, pid)
        for sig, wait in ((signal.SIGTERM, min(10.0, ctx.deadline.remaining() / 2)),
                          (signal.SIGKILL, ctx.deadline.remaining())):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if virt.wait_gone(pid, wait):
                break
        if virt.qemu_pid_of(ident.name) is not None and not virt.wait_gone(pid, 0.5):
            raise GenericError("libvirt unreachable and QEMU of %s (pid %d) survived SIGKILL"
                               % (ident.name, pid))
        forget(ctx)
        self._release_dead_clients(ctx)
        return OCF_SUCCESS

    def _release_dead_clients(self, ctx):
        """The domain is gone from this node without a clean handover: if its QEMU died
        holding its images (killed, crashed), release what it left in Ceph so the VM can
        start on any node (vmceph.deadclients.release). A side task: bounded by a share of
        the deadline, and it never fails the stop."""
        from vmceph import bounded, deadclients
        share = Share(ctx.deadline, deadclients.RELEASE_SHARE, deadclients.RELEASE_CAP_S)
        try:
            # whatever blocks inside (a configuration file that is a FIFO: the hostile stop
            # of tests/integration/test_reliability.py), the stop goes on at the share's end
            bounded.call(lambda: deadclients.release(ctx, LenientParams(ctx), share),
                         share.remaining() + 1.0, "releasing a dead QEMU's clients")
        except Exception as e:   # noqa: BLE001 - a side task never fails a stop
            ctx.log.warning("releasing the clients of a dead QEMU failed: %s", e)


def active(hv, dom):
    """True while the domain has a QEMU here (a crashed-preserved one too)."""
    return hv.state_of(dom)[0] in virt.LIVE_STATES


def state_or_unknown(hv, dom):
    try:
        return hv.state_of(dom, cap=5.0)
    except virt.VirtError:
        return None, None


def save_config(ctx, hv, dom, ident):
    """save_config_on_stop at stop (vmceph.configsave): best-effort, a failure is a
    warning (a config on unmounted shared storage is the very case the remembered
    identity exists for)."""
    from vmceph import configsave
    configsave.save(ctx, hv, dom, ident, "stop")
