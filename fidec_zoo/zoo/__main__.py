"""`python -m fidec_zoo.zoo list|info|eval|video|verify|table` (see `_cli`)."""

import sys

from ._cli import main

sys.exit(main())
