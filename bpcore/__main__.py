"""``python -m bpcore`` is the ``bpcore`` command."""

from .cli import main

raise SystemExit(main())
