"""`python -m dynasearch ...` (and `torchrun -m dynasearch train ...`): the console script."""

import sys

from dynasearch.cli import main

sys.exit(main())
