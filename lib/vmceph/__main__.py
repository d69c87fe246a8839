"""``python3 -m vmceph`` = the ``vmceph`` command (see cli.py)."""
import sys

from vmceph.cli import main

sys.exit(main())
