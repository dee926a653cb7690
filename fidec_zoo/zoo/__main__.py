"""`python -m fidec_zoo.zoo list|info NAME|eval NAME [--episodes N]|verify|table`."""

import sys

from ._cli import main

sys.exit(main())
