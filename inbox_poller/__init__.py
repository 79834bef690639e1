"""inbox-poller: archive Pinpointe async exports delivered by e-mail."""

__version__ = "0.1.0"
