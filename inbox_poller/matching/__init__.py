"""Reading a notification mail and deciding which export it belongs to (pure)."""
