"""`python -m ssl_jax.convert`."""

import sys

from ssl_jax.convert.cli import main

sys.exit(main())
