from serd.cli import main

raise SystemExit(main())
