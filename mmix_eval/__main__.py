from mmix_eval.cli import main

raise SystemExit(main())
