"""``python -m models``: offline batch work with no server."""

from models.cli import main

raise SystemExit(main())
