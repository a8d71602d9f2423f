"""``python -m robe``: see ``robe.cli``."""

import sys

from robe.cli import main

sys.exit(main())
