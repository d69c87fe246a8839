"""The fault soak's pure parts (tests/vmlab/chaos.py): the schedule is reproducible from
the seed and holds every kind; "writing again" and the write gap are read from the writes
as the issue defines them; the report and the timeline are generated, not hand-written."""

import os
import random
import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmlab import chaos  # noqa: E402


class FakeOracle:
    def __init__(self, records):
        self._records = records

    def records(self, vm):
        return [r for r in self._records if r["vm"] == vm]


def rec(vm, t0, t1, status="acked", node="node1", pid=10, gen=1):
    return {"vm": vm, "t0": t0, "t1": t1, "status": status, "node": node, "pid": pid,
            "gen": gen}


def soak(seed):
    return chaos.Soak(lab=None, cfg=None, oracles=[], writers=None, seed=seed,
                      log=lambda m: None)


def test_the_schedule_is_the_seeds_and_holds_every_kind_once_n_allows():
    kinds = list(chaos.FAULTS)
    a = soak(7).schedule(20, kinds)
    assert a == soak(7).schedule(20, kinds)
    assert a != soak(8).schedule(20, kinds)
    assert len(a) == 20 and set(a) == set(kinds)
    assert len(soak(7).schedule(3, kinds)) == 3


def test_writing_again_is_the_first_prompt_ack_after_the_last_failed_write():
    w = chaos.Writers(FakeOracle([
        rec("vm1", 100.0, 100.1),
        rec("vm1", 101.0, 111.0, "timeout"),      # hung from the fault on
        rec("vm1", 111.5, 111.6, "failed"),       # the last bad one
        rec("vm1", 112.0, 112.2),                 # first good after it
        rec("vm1", 112.5, 112.6),
    ]), ["vm1"])
    assert w.back_at("vm1", 100.5, 120) == round(112.2 - 100.5, 1)
    # a slow acknowledged write is a stall too
    slow = chaos.Writers(FakeOracle([rec("vm1", 101, 101 + chaos.SLOW_WRITE_S + 1),
                                     rec("vm1", 108, 108.3)]), ["vm1"])
    assert slow.back_at("vm1", 100, 120) == 8.3
    # untouched VM: its next write
    calm = chaos.Writers(FakeOracle([rec("vm1", 100.6, 100.8)]), ["vm1"])
    assert calm.back_at("vm1", 100.5, 120) == 0.3
    # never wrote again
    dead = chaos.Writers(FakeOracle([rec("vm1", 101, 102, "failed")]), ["vm1"])
    assert dead.back_at("vm1", 100, 120) is None


def test_the_longest_gap_counts_from_the_window_edges_and_acks_only():
    w = chaos.Writers(FakeOracle([rec("vm1", 10, 11), rec("vm1", 12, 13, "failed"),
                                  rec("vm1", 20, 21)]), ["vm1"])
    assert w.longest_gap("vm1", 10, 22) == 10.0
    assert w.longest_gap("vm1", 10, 40) == 19.0


def record(kind, survived=True, back=3.0, violations=None, operator=None):
    return {"kind": kind, "t": 1.0, "t_abs": 5.0, "t_end_abs": 9.0, "survived": survived,
            "safe": not violations, "all_back_s": back, "gap_s": {"vm1": 2.0},
            "violations": violations or {"watcher checker": [], "write oracle": []},
            "not_once": [], "operator": operator or [], "detail": {"node": "node2"}}


def test_the_summary_counts_per_kind_with_median_and_worst():
    s = chaos.summarize([record("crash", back=10), record("crash", back=20),
                         record("crash", back=12, survived=False,
                                violations={"watcher checker": ["x"], "write oracle": []}),
                         record("qemu-kill", back=None, survived=False)])
    assert s["crash"]["count"] == 3 and s["crash"]["survived"] == 2
    assert s["crash"]["median_s"] == 12 and s["crash"]["worst_s"] == 20
    assert s["crash"]["violations"] == {"watcher checker": 1, "write oracle": 0}
    assert s["qemu-kill"]["median_s"] is None


def result():
    writes = [chaos.Write("vm1", "node1", 1, 1, 5.0 + k, 5.2 + k, "acked") for k in range(5)]
    writes.append(chaos.Write("vm1", "node1", 1, 1, 6.0, 8.0, "timeout"))
    return {"seed": 3, "agent": "rbd", "t0": 4.0, "t_end": 20.0, "vms": ["vm1"],
            "nodes": ["node1", "node2", "node3"], "writes": writes,
            "records": [record("crash"), record("qemu-kill", survived=False, operator=[
                {"cleanup": ["vm1"], "failed": ["* vm1 start returned 'error' (x)"],
                 "unlocked": ["vm1-disk0: 10.0.0.1:0/1"]}])],
            "oracles": {"write oracle": {"lost_acked": 0, "acknowledged": 5},
                        "watcher checker": {"samples": 9}}}


def test_the_timeline_is_an_svg_with_a_mark_per_fault():
    svg = chaos.timeline_svg(result())
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "1: crash node2" in svg and "2: qemu-kill node2 (operator)" in svg


def test_the_report_section_replaces_itself_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n\nkept text\n")
    section = chaos.report_section(result(), "chaos-timeline.svg", command="replay me",
                                   missing=["osd-kill"])
    chaos.write_report(str(doc), section)
    chaos.write_report(str(doc), section.replace("replay me", "replay again"))
    text = doc.read_text()
    assert text.count(chaos.MARK_BEGIN) == 1 and "kept text" in text
    assert "replay again" in text and "replay me" not in text
    assert "| crash | 1 | 1 | 0 |" in text and "osd-kill" in text
    assert "operator cleanup of vm1" in text


def test_every_kind_of_the_issue_has_a_function():
    assert set(chaos.ISSUE_KINDS) <= set(chaos.FAULTS)
    assert all(callable(f) for f in chaos.FAULTS.values())
    assert random.Random(1).random() == random.Random(1).random()


def test_fail_counts_are_read_from_crm_mons_node_history():
    """the shape Pacemaker 2.1's crm_mon --output-as=xml --include=failcounts gives"""
    xml = """<pacemaker-result api-version="2.25" request="crm_mon">
      <nodes><node name="node1" id="1" online="true"/></nodes>
      <node_history>
        <node name="node1">
          <resource_history id="vm3" orphan="false" migration-threshold="3"
                            fail-count="1000000" last-failure="Wed Dec  2 13:50:01 2026"/>
          <resource_history id="vm1" orphan="false" migration-threshold="3"/>
        </node>
        <node name="node3">
          <resource_history id="vm3" orphan="false" migration-threshold="3" fail-count="1"/>
        </node>
      </node_history><status code="0" message="OK"/></pacemaker-result>"""
    assert chaos.parse_fail_counts(xml) == ["vm3 on node1: 1000000", "vm3 on node3: 1"]
    assert chaos.parse_fail_counts("<pacemaker-result/>") == []
    assert chaos.parse_fail_counts("not xml")[0].startswith("could not look")


def test_a_stop_request_ends_the_soak_after_the_fault_being_played():
    s = soak(3)
    played = []

    def play_one(kind):
        played.append(kind)
        s.records.append({"kind": kind})
        if len(played) == 2:           # asked to stop while fault 2 is played
            s.request_stop("stopped by SIGTERM")
    s.play_one = play_one
    records = s.run(10, list(chaos.FAULTS))
    assert len(played) == 2 and len(records) == 2


def test_the_first_sigterm_asks_for_a_stop_and_the_second_is_left_to_kill():
    s = soak(3)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous = chaos._stopping_on_signals(s)
    try:
        assert previous == before
        os.kill(os.getpid(), signal.SIGTERM)
        assert s.stop_reason == "stopped by SIGTERM"
        # the next one is not caught again: the default action (terminate) is back
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_soak_cut_short_says_why_in_its_report():
    r = result()
    r["faults"] = len(r["records"]) + 5
    assert "the run's time limit came first" in chaos.report_section(r, "t.svg")
    r["stopped"] = "stopped by SIGTERM"
    text = chaos.report_section(r, "t.svg")
    assert "planned: stopped by SIGTERM)" in text and "time limit" not in text
