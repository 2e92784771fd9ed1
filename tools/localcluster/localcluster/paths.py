"""Where the repository this tool serves lies: the tool is installed editable from ``tools/localcluster``."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "sandbox-operator"
CRDS = REPO_ROOT / "crds"
