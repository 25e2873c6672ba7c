import sys

from prune_core.cli import main

sys.exit(main())
