"""The chart's CRDs: the project's are templates (so ``helm upgrade`` upgrades them, and ``helm uninstall`` keeps
them), Kopf's peering CRDs stay in Helm's ``crds/`` directory, and no CRD is installed twice."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from localcluster.helm import CHART, helm, template
from localcluster.paths import CRDS

PEERING_GROUP = "kopf.dev"
KEEP = {"helm.sh/resource-policy": "keep"}


def _source_crds() -> dict[str, dict[str, Any]]:
    """Every CRD of the top-level crds/ (the generated ones and Kopf's), by name."""
    return {doc["metadata"]["name"]: doc for path in sorted(CRDS.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc}


def _crds(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "CustomResourceDefinition"}


def _helm_crds_directory() -> list[dict[str, Any]]:
    """The CRDs Helm applies from the chart's crds/ directory before it builds the templates (``helm show crds``)."""
    return [doc for doc in yaml.safe_load_all(helm("show", "crds", str(CHART)).stdout) if doc]


def _without_labels_and_annotations(crd: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in crd["metadata"].items() if k not in ("labels", "annotations")}
    return {**crd, "metadata": metadata}


def test_every_project_crd_is_a_template_equal_to_its_source_and_kept_by_uninstall() -> None:
    rendered = _crds(template({"commonLabels": {"team": "platform"}}))
    sources = {name: crd for name, crd in _source_crds().items() if crd["spec"]["group"] != PEERING_GROUP}
    assert {"sandboxes.sandbox-operator.io", "tenants.sandbox-operator.io"} <= sources.keys()
    assert rendered.keys() == sources.keys()
    for name, crd in rendered.items():
        source = sources[name]
        assert _without_labels_and_annotations(crd) == _without_labels_and_annotations(source), name
        assert (source["metadata"].get("labels") or {}).items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["team"] == "platform"
        assert crd["metadata"]["annotations"].items() >= KEEP.items()


def test_crds_install_false_renders_no_crd() -> None:
    assert _crds(template({"crds.install": False})) == {}


def test_crds_keep_false_lets_uninstall_delete_them() -> None:
    rendered = _crds(template({"crds.keep": False}))
    assert rendered
    kept = [name for name, crd in rendered.items()
            if (crd["metadata"].get("annotations") or {}).items() >= KEEP.items()]
    assert kept == []


def test_kopf_peering_crds_are_in_helms_crds_directory_and_no_crd_is_installed_twice() -> None:
    assert {crd["spec"]["group"] for crd in _helm_crds_directory()} == {PEERING_GROUP}
    installed = [o["metadata"]["name"] for o in template({}, "--include-crds")
                 if o["kind"] == "CustomResourceDefinition"]
    assert sorted(installed) == sorted(_source_crds())  # every CRD once: crds/ and the templates are disjoint


@pytest.mark.parametrize("values", [{}, {"operator.watchNamespaces": ["team-a", "team-b"]}])
def test_no_object_of_the_release_is_of_a_kind_the_release_itself_defines(values: dict[str, Any]) -> None:
    """Helm maps every object's kind before it applies any: an object whose CRD is a template of the same release
    fails on a fresh cluster ("ensure CRDs are installed first"). Only Helm's crds/ directory is applied before."""
    objects = template(values)
    templated = {(crd["spec"]["group"], crd["spec"]["names"]["kind"]) for crd in _crds(objects).values()}
    used = {(o["apiVersion"].split("/")[0], o["kind"]) for o in objects if "/" in o["apiVersion"]}
    assert not templated & used
    peerings = {(group, kind) for group, kind in used if group == PEERING_GROUP}
    assert peerings and peerings <= {(crd["spec"]["group"], crd["spec"]["names"]["kind"])
                                     for crd in _helm_crds_directory()}


def test_artifact_hub_lists_every_crd_the_chart_templates() -> None:
    listed = yaml.safe_load(yaml.safe_load((CHART / "Chart.yaml").read_text())["annotations"]["artifacthub.io/crds"])
    assert sorted(crd["name"] for crd in listed) == sorted(_crds(template()))
