"""Helpers shared by several test packages (import as `helpers.<module>`)."""
