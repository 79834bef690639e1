"""Hooks: programs run after an event (``[hooks] on_archived``), without a shell (docs/hooks.md)."""
