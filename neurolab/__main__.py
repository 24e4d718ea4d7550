"""``python -m neurolab``: the command-line interface (see :mod:`neurolab.cli`)."""

from .cli import main

raise SystemExit(main())
