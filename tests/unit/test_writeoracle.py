"""The write oracle's judgement (vmlab/writeoracle.py), from its spec (issue 11): every
acknowledged write is in the image unless a later write overwrote it; no block of an old
owner (generation) is written after the first acknowledged block of a newer owner; the
longest time with no acknowledged write. Records and stamps are made by hand here."""

from vmlab.oracleread import BLOCK, decode, encode
from vmlab.writeoracle import judge, longest_gap

RUN = 0xC0FFEE


def rec(seq, slot, gen, status="acked", node="node1", pid=100):
    return {"seq": seq, "slot": slot, "gen": gen, "node": node, "pid": pid,
            "status": status}


def stamp_of(r, run=RUN, vm="vm1"):
    return {"run": run, "vm": vm, "node": r["node"], "pid": r["pid"], "gen": r["gen"],
            "seq": r["seq"], "slot": r["slot"], "wall": 0.0}


def image_after(records):
    """What the image holds if every write landed in issue order: the last per slot."""
    out = {}
    for r in sorted(records, key=lambda r: r["seq"]):
        out[r["slot"]] = stamp_of(r)
    return out


def kinds(findings):
    return sorted({f.kind for f in findings})


def migration_log():
    """gen 1 on node1 writes slots 0..2, a write fails, gen 2 on node2 goes on."""
    return [rec(1, 0, 1), rec(2, 1, 1), rec(3, 2, 1), rec(4, 3, 1, "failed"),
            rec(5, 3, 2, node="node2", pid=200), rec(6, 4, 2, node="node2", pid=200)]


def test_the_stamp_survives_a_round_trip_and_garbage_is_no_stamp():
    block = encode(RUN, "vm1", "node2", 4321, 3, 99, 7, 1234.5)
    assert len(block) == BLOCK
    assert decode(block) == {"run": RUN, "vm": "vm1", "node": "node2", "pid": 4321, "gen": 3,
                             "seq": 99, "slot": 7, "wall": 1234.5}
    torn = bytearray(block)
    torn[20] ^= 0xFF
    assert decode(bytes(torn)) is None
    assert decode(b"\0" * BLOCK) is None


def test_a_clean_handover_is_no_violation():
    recs = migration_log()
    violations, lost, unverified = judge("vm1", recs, image_after(recs), RUN)
    assert violations == [] and lost == [] and unverified == 0


def test_an_acknowledged_write_missing_from_the_image_is_lost():
    recs = migration_log()
    image = image_after(recs)
    del image[4]                                  # seq 6, acknowledged, never landed
    violations, lost, _ = judge("vm1", recs, image, RUN)
    assert kinds(lost) == ["lost-acked"] and lost[0].facts["seq"] == 6
    assert violations == []


def test_an_older_block_of_the_same_owner_in_place_of_an_acked_one_is_lost():
    recs = [rec(1, 0, 1), rec(2, 0, 1)]           # slot 0 written twice (a retry)
    violations, lost, _ = judge("vm1", recs, {0: stamp_of(recs[0])}, RUN)
    assert kinds(lost) == ["lost-acked"] and violations == []


def test_a_block_of_an_earlier_run_is_no_acknowledged_write():
    recs = [rec(1, 0, 1)]
    _, lost, _ = judge("vm1", recs, {0: stamp_of(recs[0], run=RUN + 1)}, RUN)
    assert kinds(lost) == ["lost-acked"]


def test_a_failed_write_that_landed_after_all_is_a_later_write_not_a_loss():
    recs = [rec(1, 0, 1), rec(2, 1, 1, "failed"), rec(3, 1, 1)]
    image = image_after(recs)
    image[1] = stamp_of(recs[1])                   # the failed one is what the slot holds?
    _, lost, _ = judge("vm1", recs, image, RUN)    # then acked seq 3 is gone
    assert kinds(lost) == ["lost-acked"]
    recs = [rec(1, 0, 1), rec(2, 1, 1), rec(3, 1, 1, "timeout")]
    image = image_after(recs)                      # the timed-out seq 3 landed over seq 2
    violations, lost, _ = judge("vm1", recs, image, RUN)
    assert violations == [] and lost == []


def test_an_old_owner_writing_after_the_new_owners_first_block_is_a_late_write():
    recs = migration_log() + [rec(7, 5, 1, "timeout")]   # gen 1 again, after gen 2 began
    violations, lost, _ = judge("vm1", recs, image_after(recs), RUN)
    assert kinds(violations) == ["late-write"]
    assert violations[0].facts["stamp"]["seq"] == 7 and lost == []


def test_an_old_owner_acknowledged_after_the_new_one_began_is_two_owners():
    recs = migration_log() + [rec(7, 5, 1)]
    violations, _, _ = judge("vm1", recs, image_after(recs), RUN)
    assert kinds(violations) == ["late-write", "two-owners-acked"]


def test_a_stuck_write_of_the_old_owner_landing_over_the_new_owners_block():
    # gen 1's seq 4 timed out in slot 3; gen 2 rewrote slot 3 (seq 5, acked); then seq 4
    # landed after all: the slot holds the old owner's block
    recs = [rec(1, 0, 1), rec(2, 1, 1), rec(3, 2, 1), rec(4, 3, 1, "timeout"),
            rec(5, 3, 2, node="node2", pid=200)]
    image = image_after(recs)
    image[3] = stamp_of(recs[3])
    violations, lost, _ = judge("vm1", recs, image, RUN)
    assert kinds(lost) == ["lost-acked"]
    assert kinds(violations) == ["overwrote-newer"]


def test_a_split_brain_with_both_qemus_writing_fires():
    recs = []
    seq = 0
    for k in range(4):                              # both write every round
        for gen, node, pid in ((1, "node1", 100), (2, "node2", 200)):
            seq += 1
            recs.append(rec(seq, seq - 1, gen, node=node, pid=pid))
    violations, _, _ = judge("vm1", recs, image_after(recs), RUN)
    assert "late-write" in kinds(violations) and "two-owners-acked" in kinds(violations)


def test_blocks_the_writer_never_issued_or_of_another_vm_are_violations():
    recs = [rec(1, 0, 1)]
    image = image_after(recs)
    image[5] = stamp_of(rec(1, 5, 1), vm="vm2")
    violations, _, _ = judge("vm1", recs, image, RUN)
    assert kinds(violations) == ["foreign-stamp"]
    image = image_after(recs)
    image[0] = dict(stamp_of(recs[0]), node="node3")    # seq 1 but not as issued
    assert kinds(judge("vm1", recs, image, RUN)[0]) == ["mismatch"]


def test_a_block_issued_after_the_records_were_taken_waits_for_the_next_check():
    recs = [rec(1, 0, 1), rec(2, 1, 1)]
    image = image_after(recs + [rec(3, 2, 1)])
    assert judge("vm1", recs, image, RUN)[:2] == ([], [])


def test_a_reused_slot_counts_the_overwritten_acknowledgements_as_unverified():
    recs = [rec(1, 0, 1), rec(2, 1, 1), rec(3, 0, 1), rec(4, 1, 1)]   # a ring of 2
    violations, lost, unverified = judge("vm1", recs, image_after(recs), RUN)
    assert (violations, lost, unverified) == ([], [], 2)


def test_the_longest_gap_counts_from_start_to_end_and_skips_pauses():
    assert longest_gap([1.0, 2.0, 7.0], 0.0, 8.0) == (5.0, 2.0, 7.0)
    assert longest_gap([], 0.0, 3.0) == (3.0, 0.0, 3.0)
    assert longest_gap([1.0, 2.0], 0.0, 12.0)[0] == 10.0          # none after 2.0
    assert longest_gap([1.0, 2.0, 7.0], 0.0, 8.0, paused=[(2.5, 6.5)])[0] == 1.0
