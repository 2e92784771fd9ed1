"""What importing some modules pulls in, seen from a fresh interpreter (this one has imported everything already)."""

from __future__ import annotations

import subprocess
import sys


def modules_loaded_by(imports: list[str], unwanted: tuple[str, ...]) -> list[str]:
    """The modules named in (or below) ``unwanted`` that a fresh ``import`` of ``imports`` loads."""
    probe = (
        "import sys\n"
        f"import {', '.join(imports)}\n"
        f"unwanted, below = {unwanted!r}, {tuple(name + '.' for name in unwanted)!r}\n"
        "print(','.join(sorted(m for m in sys.modules if m in unwanted or m.startswith(below))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [name for name in result.stdout.strip().split(",") if name]
