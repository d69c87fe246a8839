"""Benchmarks of ocf:vmceph:RBDVirtualDomain against ocf:heartbeat:VirtualDomain.

`make bench` (= ``PYTHONPATH=lib:tests /usr/bin/python3 -m bench``) brings up a three-node
lab with Pacemaker (tests/vmlab), runs both agents the way pacemaker-execd runs them (one
process per action, OCF_* environment, inside the node), interleaved on the same domains,
and writes docs/benchmarks.md. See __main__.py for the options.

Modules: ``stats`` (pure: summaries, ratios, slopes, tables; unit-tested), ``runner``
(one measured process in a node), ``scenarios`` (what is measured), ``report`` (machine,
versions, the Markdown document), ``fencing`` (``python3 -m bench fencing``: fence_vmceph's
time to fence and to a VM writing again after crashes and partitions, on a lab configured
from cib-examples; its own section of docs/benchmarks.md).

Benchmarks measure, tests assert: nothing here is part of `make test`, apart from the unit
test of ``stats`` (tests/unit/test_bench_stats.py).
"""
