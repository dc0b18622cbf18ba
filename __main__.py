from meterline.cli import main

raise SystemExit(main())
