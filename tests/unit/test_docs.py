"""The parameter reference in docs/ is generated from the declarations: it must be current."""
from pathlib import Path

from vmceph import paramdoc
from vmceph.rbdvd_params import SPEC

ROOT = Path(__file__).resolve().parents[2]


def test_parameter_reference_is_current():
    assert (ROOT / "docs" / "parameters.md").read_text() == paramdoc.markdown(), \
        "docs/parameters.md is stale: run `make docs`"


def test_every_parameter_is_documented():
    text = paramdoc.markdown()
    for p in SPEC.params:
        assert "`%s`" % p.name in text
        assert p.shortdesc and (p.longdesc or p.shortdesc)
