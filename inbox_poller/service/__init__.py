"""The long-running ``inbox-poller run``: the watcher, the scheduler, systemd."""
