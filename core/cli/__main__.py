"""``python -m identitylock.core.cli`` (also what ``accelerate launch -m`` runs)."""

import sys

from . import main

sys.exit(main())
