"""`python -m paramlib` is the `paramlib` command."""

import sys

from paramlib.cli import main

sys.exit(main())
