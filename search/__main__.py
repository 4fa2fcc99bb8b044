"""``python -m search``: see ``search._cli``."""

import sys

from search._cli import main

sys.exit(main())
