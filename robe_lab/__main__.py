"""``python -m robe_lab``: the ``robe-lab`` command (see ``robe_lab.cli``)."""

import sys

from robe_lab.cli import main

sys.exit(main())
