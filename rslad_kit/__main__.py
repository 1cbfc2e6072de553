"""`python -m rslad_kit ...` is `rslad-kit ...`; torchrun needs this form:
`torchrun --nproc-per-node 2 -m rslad_kit train ...`.
"""

import sys

from rslad_kit.cli import main

sys.exit(main())
