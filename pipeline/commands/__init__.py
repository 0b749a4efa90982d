"""CLI-only commands (not DVC stages)."""
