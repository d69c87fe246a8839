"""A domain configuration file read, and its name and UUID found, without lxml.

The probe (monitor with interval 0) of a stopped domain needs only the domain's name and
UUID to ask libvirt about it. At cluster start Pacemaker probes every resource on every
node (200 VMs on 5 nodes: 1,000 probes), and importing ``lxml.etree`` (with the
``inspect`` and ``gzip`` it pulls in) and vmceph.domxml (``typing``) cost ~35 ms of a
~75 ms probe here (``python3 -X importtime``). ``pyexpat`` is built into the interpreter
and costs ~0.1 ms.

``name_and_uuid`` answers only for a plain document, and then exactly what
``domxml.parse_domain`` reads (``<name>`` and ``<uuid>``, the first of each directly under
the root ``<domain>``, their text stripped). Anything else (a DOCTYPE or entity, a
namespace, an element, comment, CDATA section or processing instruction inside ``<name>``
or ``<uuid>``, a document expat cannot read) gives None, and the caller parses with
domxml, which refuses it with its reason: this reader never makes up a name, so a probe
never answers "not running" about a domain it guessed.

The file reading (size limit, regular file only) and ``DomainXMLError`` live here so that
this path does not import domxml; domxml re-exports them.
"""

import os

MAX_BYTES = 4 * 1024 * 1024


class DomainXMLError(Exception):
    pass


def read_domain_file(path) -> bytes:
    import stat
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            raise DomainXMLError("domain configuration %s is not a regular file" % path)
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise DomainXMLError("domain configuration %s does not exist" % path) from None
    except IsADirectoryError:
        raise DomainXMLError("domain configuration %s is a directory" % path) from None
    except PermissionError:
        raise DomainXMLError("domain configuration %s is not readable" % path) from None
    if len(data) > MAX_BYTES:
        raise DomainXMLError("domain configuration %s is larger than %d bytes: refusing to parse"
                             % (path, MAX_BYTES))
    return data


class _Unsure(Exception):
    """Something the cheap reader does not judge: domxml must."""


_WANTED = ("name", "uuid")


def name_and_uuid(data):
    """(name, uuid or None) of a plain libvirt domain XML document, as domxml.parse_domain
    reads them; None when the document is not plain enough to be sure (see the module)."""
    import pyexpat
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, bytes) or len(data) > MAX_BYTES or not data.strip():
        return None
    found = {}      # "name"/"uuid" -> text, for the first of each under the root
    state = {"depth": 0, "in": None, "root": None}
    parts = []

    def unsure(*_):
        raise _Unsure()

    def start(tag, attrs):
        if ":" in tag or any(a == "xmlns" or a.startswith("xmlns:") for a in attrs):
            raise _Unsure()          # namespaces: lxml names the tag {uri}local
        state["depth"] += 1
        if state["in"] is not None:
            raise _Unsure()          # an element inside <name>/<uuid>: findtext reads less
        if state["depth"] == 1:
            state["root"] = tag
        elif state["depth"] == 2 and tag in _WANTED and tag not in found:
            state["in"] = tag
            del parts[:]

    def end(tag):
        if state["in"] is not None and state["depth"] == 2:
            found[state["in"]] = "".join(parts)
            state["in"] = None
        state["depth"] -= 1

    def text(s):
        if state["in"] is not None:
            parts.append(s)

    def inside_wanted_unsure(*_):
        if state["in"] is not None:
            raise _Unsure()

    p = pyexpat.ParserCreate()
    p.StartDoctypeDeclHandler = unsure       # entities live there; libvirt never writes one
    p.EntityDeclHandler = unsure
    p.UnparsedEntityDeclHandler = unsure
    p.SkippedEntityHandler = unsure
    p.ExternalEntityRefHandler = unsure
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = text
    p.CommentHandler = inside_wanted_unsure
    p.ProcessingInstructionHandler = inside_wanted_unsure
    p.StartCdataSectionHandler = inside_wanted_unsure
    try:
        p.Parse(data, True)
    except (_Unsure, pyexpat.ExpatError, ValueError):
        return None
    if state["root"] != "domain":
        return None
    name = found.get("name", "").strip()
    if not name:
        return None
    return name, (found.get("uuid", "").strip() or None)
