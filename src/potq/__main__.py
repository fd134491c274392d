from potq.cli import main

raise SystemExit(main())
