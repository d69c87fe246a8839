#!/usr/bin/python3
"""Render a fence agent's man page (section 8) from its own ``-o metadata``.

    packaging/fence2man.py [--lib DIR] [--python PY] [--see-also PAGE(N)]... -o OUT AGENT

fence-agents builds its pages from the same XML with an XSL stylesheet Debian does not
ship; this renders the same sections (NAME, DESCRIPTION, PARAMETERS, ACTIONS, STDIN
PARAMETERS) with the roff helpers of metadata2man.py. Nothing is written by hand: change
the agent's options and the page follows. Standard library only.
"""

import argparse
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metadata2man import TREE, build_date, esc, paragraphs, run_quiet, th  # noqa: E402

ACTIONS = {
    "on": "Unfence the node (Pacemaker runs it when the node joins).",
    "off": "Fence the node.",
    "status": "Whether the node is fenced (exit 2 when it is).",
    "list": "List the nodes the device can fence.",
    "list-status": "List the nodes and whether each is fenced.",
    "monitor": "Check that the device (here: Ceph) can fence now.",
    "metadata": "Print the agent's XML meta-data.",
    "manpage": "The meta-data this page is made from.",
    "validate-all": "Check the options.",
}


def render(xml_text, name, date, see_also):
    root = ET.fromstring(xml_text)
    out = [th(name.upper(), "8", date, "vmceph", "System Manager's Manual"),
           ".SH NAME", "%s \\- %s" % (esc(name), esc(root.get("shortdesc", ""))),
           ".SH DESCRIPTION"]
    out += paragraphs(root.findtext("longdesc") or "")
    out.append(".SH PARAMETERS")
    for p in root.iter("parameter"):
        if p.get("deprecated") == "1":
            continue
        getopt = p.find("getopt")
        content = p.find("content")
        out.append(".TP")
        out.append("\\fB%s\\fR" % esc(getopt.get("mixed") if getopt is not None else p.get("name")))
        text = p.findtext("shortdesc") or ""
        default = content.get("default") if content is not None else None
        if default:
            text += " (Default Value: %s)" % default
        if p.get("required") == "1":
            text += " This parameter is always required."
        out.append(esc(text))
    out.append(".SH ACTIONS")
    for a in root.iter("action"):
        out += [".TP", "\\fB%s\\fR" % esc(a.get("name")), esc(ACTIONS.get(a.get("name"), ""))]
    out.append(".SH STDIN PARAMETERS")
    out.append(esc("Without command-line arguments the agent reads key=value lines on "
                   "standard input, as Pacemaker's fencer passes them:"))
    for p in root.iter("parameter"):
        if p.get("deprecated") == "1":
            continue
        out += [".TP", "\\fB%s\\fR" % esc(p.get("name")), esc(p.findtext("shortdesc") or "")]
    if see_also:
        out += [".SH SEE ALSO", esc(", ".join(see_also))]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("agent")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--lib", default=os.path.join(TREE, "lib"))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--see-also", action="append", default=[])
    args = ap.parse_args(argv)
    xml_text = run_quiet([args.python, args.agent, "-o", "metadata"], args.lib,
                         "%s -o metadata" % args.agent)
    name = os.path.basename(args.agent)
    with open(args.output, "w") as f:
        f.write(render(xml_text, name, build_date(), args.see_also))


if __name__ == "__main__":
    main()
