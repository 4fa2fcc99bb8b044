"""``python -m costmodel``: see ``costmodel._cli``."""

from costmodel._cli import main

raise SystemExit(main())
