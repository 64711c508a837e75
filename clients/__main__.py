"""``python -m clients``: the command-line client for video files."""

from clients.cli import main

raise SystemExit(main())
