"""``python -m sandbox_operator.mcp_server``."""

import sys

from sandbox_operator.mcp_server import main

sys.exit(main())
