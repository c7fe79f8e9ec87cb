"""`python -m xlb.cli`: the `xlb` command."""

import sys

from . import main

sys.exit(main())
