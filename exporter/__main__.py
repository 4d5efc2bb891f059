"""``python -m exporter`` is ``gecko-exporter``."""

from exporter.cli import main

raise SystemExit(main())
