"""``python -m replay`` is ``assistiv replay``."""

import sys

from replay.cli import main

sys.exit(main())
