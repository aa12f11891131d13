"""``python -m mcastkit`` runs the ``mcast`` command."""

import sys

from .cli.main import main

sys.exit(main())
