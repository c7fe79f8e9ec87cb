"""`python -m xlb.lab cleanup|list`: the lab's housekeeping."""

import sys

from .lab import main

sys.exit(main())
