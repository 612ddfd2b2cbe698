"""autoresearch: the library behind scripts/ratchet.py, the task harnesses and the Claude Code hooks."""
