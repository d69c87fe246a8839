"""The README's quick start, as the tests run it: the shell block between the markers

    <!-- quickstart: ... -->
    ```sh
    ...
    ```
    <!-- /quickstart -->

in README.md. The block takes its names (Ceph user and pool, VM, domain XML, target node)
from shell variables with defaults (``: "${VM:=vm1}"``), so a test runs it unchanged with
its own values in the environment: nothing in it is rewritten for the test.
"""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARKED = re.compile(r"^<!-- quickstart\b[^>]*-->\n```sh\n(.*?)^```\n<!-- /quickstart -->$",
                    re.M | re.S)
# the variables the block reads, with the README's defaults
VARIABLE = re.compile(r'"\$\{([A-Z_]+):=([^}]*)\}"')


def block(readme=README):
    """The shell text of the README's one marked quick-start block."""
    found = MARKED.findall(Path(readme).read_text())
    if len(found) != 1:
        raise ValueError("%s: expected exactly one block between '<!-- quickstart' and "
                         "'<!-- /quickstart -->', found %d" % (readme, len(found)))
    return found[0]


def variables(text):
    """{name: README default} of the block's ': "${NAME:=default}"' lines."""
    return dict(VARIABLE.findall(text))
