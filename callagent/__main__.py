from callagent.cli import main

raise SystemExit(main())
