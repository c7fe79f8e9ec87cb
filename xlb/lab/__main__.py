"""`python -m xlb.lab cleanup|list`: see xlb/lab/cli.py."""

import sys

from .cli import main

sys.exit(main())
