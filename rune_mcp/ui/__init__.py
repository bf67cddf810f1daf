"""`rune ui`: a local web dashboard to see and steer the memory.

Rune's memory is LoRA weights nobody can read, so the dashboard shows what each adapter was
learned from and holds: projects -> adapters -> lessons, with their digests verified and their
lineage; the job queue, live; a playground answering a question with and without the recalled
memory; benchmark results drawn from their JSON; and forgetting an adapter or a session, in
two steps. It listens on 127.0.0.1 only, behind the same Host/Origin checks and optional
token as `rune serve --http`; every page is rendered on the server from this package's files.

    from rune_mcp.ui import UiOptions, create_app
    app = create_app(settings, UiOptions(port=8787))
"""

from __future__ import annotations

from rune_mcp.ui.app import DEFAULT_PORT, UiOptions, create_app, serve_ui

__all__ = ["DEFAULT_PORT", "UiOptions", "create_app", "serve_ui"]
