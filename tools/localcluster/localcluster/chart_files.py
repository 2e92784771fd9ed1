"""The chart's copies of the top-level CRDs and tenant manifests: ``python -m localcluster.chart_files`` syncs them.

Helm reads only files inside the chart, so ``crds/*.yaml`` are copied to ``charts/sandbox-operator/crds/`` and
``deploy/*.yaml`` to ``charts/sandbox-operator/files/``; ``tests/unit/test_chart.py`` fails when they differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from localcluster.paths import CHART, REPO_ROOT

ROOT = REPO_ROOT
COPIES = {ROOT / "crds": CHART / "crds", ROOT / "deploy": CHART / "files"}


def expected_copies() -> dict[Path, Path]:
    """``{source: copy in the chart}`` for every file the chart must carry verbatim."""
    return {source: target_dir / source.name
            for source_dir, target_dir in COPIES.items() for source in sorted(source_dir.glob("*.yaml"))}


def stale_copies() -> list[str]:
    """Chart copies that are missing, differ from their source, or have no source any more."""
    expected = expected_copies()
    problems = [str(copy.relative_to(ROOT)) for source, copy in expected.items()
                if not copy.is_file() or copy.read_bytes() != source.read_bytes()]
    problems += [str(p.relative_to(ROOT)) for p in sorted((CHART / "crds").glob("*.yaml"))
                 if p not in expected.values()]
    return problems


def sync() -> list[Path]:
    """Copy every source into the chart and remove CRD copies whose source is gone; return what changed."""
    changed = []
    for source, copy in expected_copies().items():
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())
            changed.append(copy)
    for orphan in (CHART / "crds").glob("*.yaml"):
        if orphan not in expected_copies().values():
            orphan.unlink()
            changed.append(orphan)
    return changed


if __name__ == "__main__":
    for path in sync():
        print(f"synced {path.relative_to(ROOT)}")
    sys.exit(0)
