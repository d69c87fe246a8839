#!/usr/bin/python3
"""Render an OCF resource agent's man page (section 7) from its own meta-data.

    packaging/metadata2man.py [--provider vmceph] [--lib DIR] [--clone] [--meta K=V]...
                              [--see-also PAGE(N)]... [-o OUT] AGENT

Runs ``AGENT meta-data`` (with DIR, default the source tree's lib/, first on PYTHONPATH,
so the page describes the code being packaged, not whatever vmceph is installed) and
writes ocf_PROVIDER_AGENT(7) in roff, with the sections resource-agents' pages have
(they come from the same meta-data through ra2refentry.xsl): NAME, SYNOPSIS,
DESCRIPTION, SUPPORTED PARAMETERS, SUPPORTED ACTIONS, EXAMPLE CRM SHELL, EXAMPLE PCS,
SEE ALSO. Nothing in the page is written by hand: change the agent's Param declarations
and the page follows. ``--xml FILE`` renders saved meta-data instead of running AGENT.

The date in the header comes from SOURCE_DATE_EPOCH when set (dpkg-buildpackage sets it
from debian/changelog), so that the build is reproducible. Standard library only.
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.dirname(HERE)

ACTION_TEXT = {
    "start": "Starts the resource.",
    "stop": "Stops the resource.",
    "monitor": "Performs a detailed status check.",
    "status": "Performs a status check.",
    "migrate_to": "Live-migrates the resource from this node to the target node "
                  "(run on the source node).",
    "migrate_from": "Completes a live migration on the target node.",
    "promote": "Promotes the resource.",
    "demote": "Demotes the resource.",
    "notify": "Receives notifications about other instances of the clone.",
    "reload": "Reloads the resource's configuration.",
    "reload-agent": "Reloads the agent's own parameters without restarting the resource.",
    "meta-data": "Retrieves resource agent metadata (internal use only).",
    "validate-all": "Performs a validation of the resource configuration.",
}


# ---------------------------------------------------------------------------- roff

def esc(text):
    """Escape plain text for roff: backslashes, minus signs, control characters at the
    start of a line. Newlines are kept (callers decide what a newline means)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def th(title, section, date, source, manual):
    def q(s):
        return '"%s"' % esc(s).replace('"', "'")
    return ".TH %s %s %s %s %s" % (q(title), q(section), q(date), q(source), q(manual))


def paragraphs(text):
    """roff for free text: blank lines separate paragraphs; a paragraph whose lines are
    indented (a table, a list, a command) is kept verbatim; others are reflowed."""
    out = []
    for para in re.split(r"\n[ \t]*\n", text.strip("\n")):
        lines = para.rstrip().split("\n")
        if not any(line.strip() for line in lines):
            continue
        out.append(".PP")
        if any(line[:1] in (" ", "\t") for line in lines):
            indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
            out += [".RS 4", ".nf"]
            out += [esc(line[indent:].rstrip()) for line in lines]
            out += [".fi", ".RE"]
        else:
            out.append(esc(" ".join(line.strip() for line in lines)))
    return out


# Placeholders in verbatim text: ITALIC_ON + "string" + ITALIC_OFF renders as \fIstring\fR.
ITALIC_ON, ITALIC_OFF = "\x01", "\x02"


def verbatim(lines):
    return [".PP", ".RS 4", ".nf"] + [
        esc(line).replace(ITALIC_ON, "\\fI").replace(ITALIC_OFF, "\\fR") for line in lines
    ] + [".fi", ".RE"]


def build_date():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%d")


def run_quiet(argv, lib, what):
    """Run a command of the source tree with LIB first on PYTHONPATH; its stdout, or exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("COLUMNS", "80")
    env["LC_ALL"] = "C.UTF-8"
    try:
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60, universal_newlines=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit("%s: %s failed: %s" % (sys.argv[0], what, e))
    if p.returncode != 0:
        raise SystemExit("%s: %s exited %d:\n%s" % (sys.argv[0], what, p.returncode, p.stderr))
    return p.stdout


# ---------------------------------------------------------------------------- meta-data

def text_of(elem, tag):
    child = elem.find(tag)
    return (child.text or "").strip() if child is not None else ""


def parse_metadata(xml_text):
    root = ET.fromstring(xml_text.encode("utf-8"))
    if root.tag != "resource-agent" or not root.get("name"):
        raise SystemExit("meta-data: root element is not <resource-agent name=...>")
    params = []
    for p in root.findall("./parameters/parameter"):
        content = p.find("content")
        params.append({
            "name": p.get("name"),
            "required": p.get("required") in ("1", "true"),
            "unique": p.get("unique") in ("1", "true"),
            "shortdesc": text_of(p, "shortdesc"),
            "longdesc": text_of(p, "longdesc"),
            "type": content.get("type", "string") if content is not None else "string",
            "default": content.get("default") if content is not None else None,
        })
    actions = [dict(a.attrib) for a in root.findall("./actions/action")]
    if not actions:
        raise SystemExit("meta-data: no <actions>")
    return {
        "name": root.get("name"),
        "version": root.get("version", ""),
        "shortdesc": text_of(root, "shortdesc"),
        "longdesc": text_of(root, "longdesc"),
        "params": params,
        "actions": actions,
    }


# ---------------------------------------------------------------------------- the page

def param_summary(p):
    bits = ["required" if p["required"] else "optional"]
    if p["unique"]:
        bits.insert(0, "unique")
    bits.append(p["type"])
    if p["default"] is None:
        bits.append("no default")
    elif p["default"] == "":
        bits.append("default empty")
    else:
        bits.append('default "%s"' % p["default"])
    return "(" + ", ".join(bits) + ")"


def action_text(a):
    name = a["name"]
    words = [ACTION_TEXT.get(name, "Performs the %s action." % name)]
    if a.get("depth", "0") not in ("", "0"):
        words.append("Check level (OCF_CHECK_LEVEL): %s." % a["depth"])
    if a.get("timeout"):
        words.append("Suggested minimum timeout: %s." % a["timeout"])
    if a.get("interval") and a["interval"] not in ("0", "0s"):
        words.append("Suggested interval: %s." % a["interval"])
    if a.get("role"):
        words.append("Role: %s." % a["role"])
    return " ".join(words)


def example_values(md):
    return [(p["name"], ITALIC_ON + p["type"] + ITALIC_OFF)
            for p in md["params"] if p["required"]]


def monitor_op(md):
    for a in md["actions"]:
        if a["name"] == "monitor" and a.get("depth", "0") in ("", "0"):
            return a
    return None


def example_crm(md, rid, agent_id, meta, clone):
    lines = ["primitive %s %s \\" % (rid, agent_id)]
    values = example_values(md)
    if values:
        lines.append("  params \\")
        lines += ["    %s=%s \\" % (k, v) for k, v in values]
    if meta:
        lines.append("  meta %s \\" % " ".join("%s=%s" % kv for kv in meta))
    mon = monitor_op(md)
    if mon:
        lines.append("  op monitor timeout=%s interval=%s"
                     % (mon.get("timeout", "20s"), mon.get("interval", "10s")))
    else:
        lines[-1] = lines[-1][:-2]
    if clone:
        lines.append("clone cl_%s %s" % (md["name"], rid))
    return lines


def example_pcs(md, rid, agent_id, meta, clone):
    lines = ["pcs resource create %s %s \\" % (rid, agent_id)]
    lines += ["  %s=%s \\" % (k, v) for k, v in example_values(md)]
    mon = monitor_op(md)
    if mon:
        lines.append("  op monitor timeout=%s interval=%s \\"
                     % (mon.get("timeout", "20s"), mon.get("interval", "10s")))
    if meta:
        lines.append("  meta %s \\" % " ".join("%s=%s" % kv for kv in meta))
    if clone:
        lines.append("  clone")
    else:
        lines[-1] = lines[-1][:-2]
    return lines


def see_also_line(refs):
    """'vmceph(1)' ... -> roff: bold names with their sections, comma-separated."""
    items = []
    for ref in refs:
        m = re.fullmatch(r"([^()\s]+)\((\w+)\)", ref)
        if not m:
            raise SystemExit("--see-also wants PAGE(SECTION), not %r" % ref)
        items.append("\\fB%s\\fR(%s)" % (esc(m.group(1)), m.group(2)))
    return ", ".join(items)


def render(md, provider, date, clone=False, extra_meta=(), see_also=()):
    name = md["name"]
    page = "ocf_%s_%s" % (provider, name)
    agent_id = "ocf:%s:%s" % (provider, name)
    rid = "p_" + name
    meta = []
    names = [a["name"] for a in md["actions"]]
    if "migrate_to" in names and "migrate_from" in names:
        meta.append(("allow-migrate", "true"))
    meta += list(extra_meta)

    out = [
        '.\\" Generated by packaging/metadata2man.py from "%s meta-data": do not edit.' % name,
        th(page.upper(), "7", date, ("%s %s" % (provider, md["version"])).strip(),
           "OCF resource agents"),
        ".nh", ".ad l",
        ".SH NAME",
        "%s \\- %s" % (esc(page), esc(md["shortdesc"] or name)),
        ".SH SYNOPSIS",
        ".HP \\w'\\fB%s\\fR\\ 'u" % esc(name),
        "\\fB%s\\fR [%s]" % (esc(name), " | ".join(esc(n) for n in dict.fromkeys(names))),
        ".SH DESCRIPTION",
    ]
    out += paragraphs(md["longdesc"] or md["shortdesc"])
    out += [".PP",
            "The agent is installed as \\fI/usr/lib/ocf/resource.d/%s/%s\\fR; Pacemaker "
            "refers to it as \\fB%s\\fR." % (esc(provider), esc(name), esc(agent_id))]

    out.append('.SH "SUPPORTED PARAMETERS"')
    if not md["params"]:
        out += [".PP", "This resource agent has no parameters."]
    for p in md["params"]:
        out += [".PP", "\\fB%s\\fR" % esc(p["name"]), ".RS 4"]
        if p["shortdesc"]:
            out.append("\\fI%s\\fR" % esc(p["shortdesc"]).replace("\n", " "))
        body = paragraphs(p["longdesc"])
        out += body[1:] if body and not p["shortdesc"] else body
        out += [".sp", esc(param_summary(p)), ".RE"]

    out += ['.SH "SUPPORTED ACTIONS"', ".PP",
            "This resource agent supports the following actions (operations):"]
    for a in md["actions"]:
        out += [".PP", "\\fB%s\\fR" % esc(a["name"]), ".RS 4", esc(action_text(a)), ".RE"]

    out += ['.SH "EXAMPLE CRM SHELL"', ".PP",
            "An example configuration for a %s resource using the \\fBcrm\\fR(8) shell:"
            % esc(name)]
    out += verbatim(example_crm(md, rid, agent_id, meta, clone))
    out += ['.SH "EXAMPLE PCS"', ".PP",
            "An example configuration for a %s resource using \\fBpcs\\fR(8):" % esc(name)]
    out += verbatim(example_pcs(md, rid, agent_id, meta, clone))
    refs = list(see_also) + ["crm_resource(8)", "pcs(8)", "crm(8)"]
    out += ['.SH "SEE ALSO"', ".PP", see_also_line(refs)]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("agent", help="the agent executable (e.g. agents/RBDVirtualDomain)")
    ap.add_argument("--provider", default="vmceph")
    ap.add_argument("--lib", default=os.path.join(TREE, "lib"),
                    help="put DIR first on PYTHONPATH (default: the source tree's lib/)")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter for AGENT")
    ap.add_argument("--xml", help="render this saved meta-data instead of running AGENT")
    ap.add_argument("--clone", action="store_true", help="the examples create a clone")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="a meta attribute for the examples (repeatable)")
    ap.add_argument("--see-also", action="append", default=[], metavar="PAGE(N)")
    ap.add_argument("-o", "--output", help="write here instead of stdout")
    args = ap.parse_args(argv)

    if args.xml:
        with open(args.xml, encoding="utf-8") as f:
            xml_text = f.read()
    else:
        xml_text = run_quiet([args.python, args.agent, "meta-data"], os.path.abspath(args.lib),
                             "%s meta-data" % args.agent)
    md = parse_metadata(xml_text)
    if not args.xml and md["name"] != os.path.basename(args.agent):
        raise SystemExit("%s: meta-data names the agent %r" % (args.agent, md["name"]))
    meta = []
    for kv in args.meta:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error("--meta wants KEY=VALUE, not %r" % kv)
        meta.append((k, v))
    page = render(md, args.provider, build_date(), args.clone, meta, args.see_also)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
