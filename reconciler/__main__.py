"""`python -m reconciler`: the same as the `netboot-reconcile` command."""

import sys

from reconciler.cli import main

sys.exit(main())
