"""``python -m game`` is the same as the ``latent-reach`` command."""

import sys

from game.cli import main

sys.exit(main())
