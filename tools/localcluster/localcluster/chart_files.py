"""The chart's copies of the top-level CRDs and tenant manifests: ``python -m localcluster.chart_files`` syncs them.

Helm reads only files inside the chart, so each ``crds/*.yaml`` and ``deploy/*.yaml`` is copied into the chart;
``tests/unit/test_chart.py`` fails when a copy differs, is missing, or has no source any more. Where a CRD goes:

- the project's CRDs to ``files/crds/``, which ``templates/crds.yaml`` renders as templates (``crds.install``), so
  ``helm upgrade`` upgrades them;
- Kopf's peering CRDs (group ``kopf.dev``) to Helm's ``crds/`` directory: Helm creates those before it builds the
  templates, so the chart's own ClusterKopfPeering has a known kind on a fresh cluster; it skips them when another
  Kopf operator installed them already, and no release owns them (they are shared by every Kopf operator).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from localcluster.paths import CHART, REPO_ROOT

ROOT = REPO_ROOT
HELM_CRDS_DIR = CHART / "crds"
TEMPLATED_CRDS_DIR = CHART / "files" / "crds"
HELM_CRDS_DIR_GROUPS = frozenset({"kopf.dev"})
CRD_COPY_DIRS = (HELM_CRDS_DIR, TEMPLATED_CRDS_DIR)


def crd_copy_dir(source: Path) -> Path:
    """Where the chart carries the CRD file ``source``: Helm's ``crds/`` for Kopf's peering, else ``files/crds/``."""
    groups = {doc["spec"]["group"] for doc in yaml.safe_load_all(source.read_text()) if doc}
    return HELM_CRDS_DIR if groups <= HELM_CRDS_DIR_GROUPS else TEMPLATED_CRDS_DIR


def expected_copies() -> dict[Path, Path]:
    """``{source: copy in the chart}`` for every file the chart must carry verbatim."""
    crds = {source: crd_copy_dir(source) / source.name for source in sorted((ROOT / "crds").glob("*.yaml"))}
    deploy = {source: CHART / "files" / source.name for source in sorted((ROOT / "deploy").glob("*.yaml"))}
    return crds | deploy


def _orphans(expected: dict[Path, Path]) -> list[Path]:
    """CRD copies in the chart whose source is gone or belongs in the other directory (they would install twice)."""
    return [p for directory in CRD_COPY_DIRS for p in sorted(directory.glob("*.yaml")) if p not in expected.values()]


def stale_copies() -> list[str]:
    """Chart copies that are missing, differ from their source, or have no source (there) any more."""
    expected = expected_copies()
    problems = [str(copy.relative_to(ROOT)) for source, copy in expected.items()
                if not copy.is_file() or copy.read_bytes() != source.read_bytes()]
    return problems + [str(p.relative_to(ROOT)) for p in _orphans(expected)]


def sync() -> list[Path]:
    """Copy every source into the chart and remove CRD copies that have no place there; return what changed."""
    expected = expected_copies()
    changed = []
    for source, copy in expected.items():
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())
            changed.append(copy)
    for orphan in _orphans(expected):
        orphan.unlink()
        changed.append(orphan)
    return changed


if __name__ == "__main__":
    for path in sync():
        print(f"synced {path.relative_to(ROOT)}")
    sys.exit(0)
