"""Entry point of ``python -m hw_profiles``."""

import sys

from hw_profiles._cli import main

sys.exit(main())
