"""The recovery curve of `make bench` (tests/bench/recovery.py): its table, chart and the
report section it keeps in docs/benchmarks.md, from made-up runs (the crashes themselves
run on the lab, in make bench)."""

import json
import xml.etree.ElementTree as ET

from bench import recovery


def result():
    runs = [{"vms": 1, "first_s": 12.0, "last_s": 12.0, "sessions_before": 4,
             "sessions_peak": 6},
            {"vms": 5, "first_s": 13.0, "last_s": 15.0, "sessions_before": 8,
             "sessions_peak": 18},
            {"vms": 5, "first_s": 13.5, "last_s": 17.0, "sessions_before": 8,
             "sessions_peak": 20},
            {"vms": 10, "error": "RuntimeError('not all writing')"}]
    return {"runs": runs, "counts": [1, 5, 10], "date": "2026-12-02 05:30 UTC",
            "minutes": 12.0, "checker": {}}


def test_rows_relate_the_last_vm_to_the_single_vm_of_the_same_run():
    rows = recovery.rows(result())
    assert rows[0] == ["1", "1", "12.0", "12.0", "1.00x", "4.0 / 6.0", "2.0"]
    five = rows[1]
    assert five[1] == "2" and five[3] == "16.0 (15.0-17.0)"
    assert five[4] == "1.33x"                        # 16 / 12
    assert five[6] == "11.0 (10.0-12.0)"             # peak - before, per run
    assert rows[2][:2] == ["10", "0 (1 failed)"]     # a failed count is shown, not dropped


def test_client_sessions_count_clients_only():
    text = json.dumps([{"con_type": "mon"}, {"con_type": "client"}, {"con_type": "osd"},
                       {"con_type": "client"}])
    assert recovery.client_sessions(text) == 2


def test_section_is_written_once_kept_by_the_main_report_and_replaced_in_place(tmp_path):
    path = str(tmp_path / "benchmarks.md")
    with open(path, "w") as f:
        f.write("# Benchmarks\n\n## Results\n\nmain\n\n## Fencing through Ceph\n\nfence\n")
    recovery.write(path, "first body")
    recovery.write(path, "second body")
    text = open(path).read()
    assert text.count(recovery.BEGIN) == 1 and "first body" not in text
    assert "second body" in text and text.count(recovery.TITLE) == 1
    carried = recovery.previous(path)
    assert carried.lstrip().startswith(recovery.BEGIN + "\n" + recovery.TITLE)
    assert "second body" in carried
    # written in the middle, the section after it keeps its blank line
    with open(path, "w") as f:
        f.write("# B\n\n" + carried.strip("\n") + "\n\n## Fencing through Ceph\n\nfence\n")
    recovery.write(path, "third body")
    text = open(path).read()
    assert "third body" in text and "\n\n## Fencing through Ceph\n" in text


def test_section_and_chart_say_what_was_measured():
    body = recovery.section(result(), "python3 -m bench recovery")
    assert "last VM writing (s)" in body and recovery.SVG in body
    doc = ET.fromstring(recovery.chart(result()))
    ns = "{http://www.w3.org/2000/svg}"
    assert len(doc.findall(ns + "polyline")) == 2     # last and first VM writing
    assert len(doc.findall(ns + "circle")) == 4       # counts 1 and 5 (10 failed)
