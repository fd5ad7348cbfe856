from ktrail.cli.main import main

raise SystemExit(main())
