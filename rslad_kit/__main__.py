"""`python -m rslad_kit`: the same as the `rslad-kit` command."""

import sys

from rslad_kit.cli import main

sys.exit(main())
