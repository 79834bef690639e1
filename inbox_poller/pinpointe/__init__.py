"""The Pinpointe API edge: submit exports, ask about jobs, over requests."""
