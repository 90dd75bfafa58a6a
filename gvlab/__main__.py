"""`python -m gvlab ...` is the `gvlab` command."""

import sys

from gvlab.cli import main

sys.exit(main())
