"""Clients (SDK, CLI, MCP server) import the API models without pulling in the operator's runtime."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_api_loads_neither_kopf_nor_the_async_client() -> None:
    probe = (
        "import sys\n"
        "import sandbox_operator.api.crd, sandbox_operator.api.names, sandbox_operator.api.sandbox\n"
        "import sandbox_operator.api.schema, sandbox_operator.api.tenant\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes_asyncio', 'kubernetes'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"the api package pulled in {result.stdout.strip()}"


def test_the_probe_would_see_kopf_if_it_were_imported() -> None:
    result = subprocess.run([sys.executable, "-c", "import sys, sandbox_operator.sandbox.handlers; "
                             "print('kopf' in sys.modules)"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"
