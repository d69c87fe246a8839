"""The parameter reference in Markdown, generated from the agents' declarations
(``python3 -m vmceph.paramdoc > docs/parameters.md``; a unit test keeps the file current)."""

import sys

from vmceph.ocf import RELOAD_DECISION, param_longdesc


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def agent_markdown(spec):
    out = ["## ocf:vmceph:%s" % spec.name, "", spec.shortdesc + ".", ""]
    groups = [("Parameters of ocf:heartbeat:VirtualDomain", [p for p in spec.params if p.inherited]),
              ("Parameters", [p for p in spec.params if not p.inherited])]
    for title, params in groups:
        if not params:
            continue
        if any(p.inherited for p in spec.params):
            out += ["### " + title, ""]
        out += ["| name | type | default | description |", "|---|---|---|---|"]
        for p in params:
            default = p.default_text()
            marks = [m for m, on in (("required", p.required), ("restarts", p.unique)) if on]
            out.append("| `%s`%s | %s | %s | %s |" % (
                p.name, " (%s)" % ", ".join(marks) if marks else "", p.type,
                "`%s`" % default if default not in (None, "") else "", _cell(param_longdesc(p))))
        out.append("")
    out += ["Actions: " + ", ".join("%s (timeout %s%s%s)" % (
        a.name, a.timeout, ", interval %s" % a.interval if a.interval else "",
        ", OCF_CHECK_LEVEL %d" % a.depth if a.depth else "")
        for a in spec.actions), ""]
    return "\n".join(out)


def markdown():
    from vmceph.rbdvd_params import SPEC as RBDVD
    from vmceph.cephhealth import SPEC as HEALTH
    head = ["# Parameter reference", "",
            "Generated from the agents' parameter declarations by `python3 -m vmceph.paramdoc`;",
            "do not edit by hand.", ""]
    tail = ["## Changing parameters: reload or restart", "", RELOAD_DECISION, ""]
    return "\n".join(head) + "\n" + agent_markdown(RBDVD) + "\n" + agent_markdown(HEALTH) \
        + "\n" + "\n".join(tail)


if __name__ == "__main__":
    sys.stdout.write(markdown())
