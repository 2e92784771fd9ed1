"""``python -m sandbox_operator.cli``: the ``sandbox`` command."""

import sys

from sandbox_operator.cli import main

sys.exit(main())
