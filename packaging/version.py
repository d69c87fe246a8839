#!/usr/bin/python3
"""Print vmceph's version, read from lib/vmceph/__init__.py (the one place it is defined).

    packaging/version.py [python|deb|rpm] [--tree DIR]

python: __version__ as written (PEP 440).
deb, rpm: the same with a pre-release or dev suffix turned into "~SUFFIX", so that it sorts
before the release in dpkg and rpm (0.2.0rc1 -> 0.2.0~rc1 < 0.2.0), as PEP 440 says.

The file is parsed, not imported: no vmceph dependency is needed to package it.
"""

import argparse
import ast
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def python_version(tree):
    path = os.path.join(tree, "lib", "vmceph", "__init__.py")
    with open(path, encoding="utf-8") as f:
        module = ast.parse(f.read(), path)
    for node in module.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            break
    raise SystemExit("%s: no literal __version__ = \"...\" found" % path)


def package_version(version):
    """PEP 440 -> dpkg/rpm: 1.0rc1, 1.0.dev3, 1.0a1 -> 1.0~rc1, 1.0~dev3, 1.0~a1."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?",
                        version):
        raise SystemExit("version %r is not a plain PEP 440 release/pre-release; "
                         "teach packaging/version.py how to map it" % version)
    v = re.sub(r"(\d)(a|b|rc)(\d+)", r"\1~\2\3", version)
    v = re.sub(r"\.dev(\d+)$", r"~dev\1", v)
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("flavour", nargs="?", default="python", choices=("python", "deb", "rpm"))
    ap.add_argument("--tree", default=os.path.dirname(HERE),
                    help="source tree holding lib/vmceph (default: this checkout)")
    args = ap.parse_args()
    v = python_version(args.tree)
    print(v if args.flavour == "python" else package_version(v))


if __name__ == "__main__":
    sys.exit(main())
