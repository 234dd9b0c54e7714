"""``python -m feedsvc.cli``: the same as the ``feedsvc`` command."""

import sys

from feedsvc.cli.main import main

sys.exit(main())
