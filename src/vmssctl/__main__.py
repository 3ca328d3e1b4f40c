from vmssctl.cli import main

raise SystemExit(main())
