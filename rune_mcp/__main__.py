"""`python -m rune_mcp` runs the `rune` command line."""

from rune_mcp.cli import main

raise SystemExit(main())
