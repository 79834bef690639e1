from inbox_poller.cli import main

raise SystemExit(main())
