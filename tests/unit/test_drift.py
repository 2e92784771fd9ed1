"""Comparing a live child with its rendering: what the operator sets must be there and equal; what the API server
adds beside it is not drift; under exact fields nothing may be added."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_operator.api import names as c
from sandbox_operator.k8s.manifest import differences, manifest_hash, owned_view, packed_owned_view, rendered_hash
from sandbox_operator.sandbox import decide
from sandbox_operator.sandbox.decide import tampered_fields
from sandbox_operator.sandbox.render import render_network_policy, render_pod, render_service
from tests.unit import strategies
from tests.unit.builders import sandbox


def live(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the API server hands it back: defaults added, zero values dropped, status present."""
    body = json.loads(json.dumps(manifest))
    body["metadata"] |= {"uid": "u", "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z"}
    body["status"] = {"phase": "Running"}
    return body


def pod_drift(body: dict[str, Any]) -> list[str]:
    return tampered_fields(c.ChildKind.POD, render_pod(sandbox()), owned_view(body))


def test_a_child_as_rendered_has_no_drift() -> None:
    sbx = sandbox({"network": {"ports": [{"name": "http", "port": 8080}]}})
    for kind, manifest in (
        (c.ChildKind.POD, render_pod(sbx)),
        (c.ChildKind.NETWORK_POLICY, render_network_policy(sbx)),
        (c.ChildKind.SERVICE, render_service(sbx)),
    ):
        assert manifest is not None
        assert tampered_fields(kind, manifest, owned_view(live(manifest))) == []


def test_what_the_api_server_adds_or_rewrites_is_not_drift() -> None:
    body = live(render_pod(sandbox({"resources": {"cpu": "0.5", "memory": "1024Mi"}})))
    spec = body["spec"]
    spec |= {"nodeName": "node-1", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"}
    spec["tolerations"] = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]
    container = spec["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["resources"]["limits"] |= {"cpu": "500m", "memory": "1Gi"}
    del spec["hostNetwork"]  # false is dropped on the way in
    expected = render_pod(sandbox({"resources": {"cpu": "0.5", "memory": "1024Mi"}}))
    assert tampered_fields(c.ChildKind.POD, expected, owned_view(body)) == []


def test_a_changed_image_or_resources_is_drift() -> None:
    body = live(render_pod(sandbox()))
    body["spec"]["containers"][0]["image"] = "evil:latest"
    body["spec"]["containers"][0]["resources"]["limits"]["memory"] = "64Gi"
    assert pod_drift(body) == [
        "spec.containers[sandbox].image",
        "spec.containers[sandbox].resources.limits.memory",
    ]


def test_a_removed_or_added_pod_label_is_drift() -> None:
    removed = live(render_pod(sandbox()))
    del removed["metadata"]["labels"][c.LABEL_SANDBOX]
    added = live(render_pod(sandbox()))
    added["metadata"]["labels"]["app"] = "web"  # another NetworkPolicy may allow what this one denies
    assert pod_drift(removed) == ["metadata.labels"]
    assert pod_drift(added) == ["metadata.labels"]


def test_a_lost_owner_reference_is_drift() -> None:
    body = live(render_pod(sandbox()))
    body["metadata"]["ownerReferences"] = []
    assert pod_drift(body) == ["metadata.ownerReferences[demo]"]


def test_a_network_policy_opened_in_any_way_is_drift() -> None:
    policy = render_network_policy(sandbox())
    for change in (
        lambda spec: spec.__setitem__("egress", [{}]),
        lambda spec: spec.__setitem__("ingress", [{}]),
        lambda spec: spec["podSelector"]["matchLabels"].__setitem__("never", "matches"),
        lambda spec: spec["podSelector"].__setitem__("matchExpressions", []) or spec.__setitem__("podSelector", {}),
        lambda spec: spec.__setitem__("policyTypes", ["Ingress"]),
    ):
        body = live(policy)
        change(body["spec"])
        assert tampered_fields(c.ChildKind.NETWORK_POLICY, policy, owned_view(body)) == ["spec"]


def test_a_service_selecting_other_pods_is_drift_but_an_assigned_cluster_ip_is_not() -> None:
    service = render_service(sandbox({"network": {"ports": [{"name": "http", "port": 8080}]}}))
    assert service is not None
    body = live(service)
    body["spec"] |= {"clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"], "ipFamilies": ["IPv4"]}
    assert tampered_fields(c.ChildKind.SERVICE, service, owned_view(body)) == []
    body["spec"]["selector"]["app"] = "db"
    assert tampered_fields(c.ChildKind.SERVICE, service, owned_view(body)) == ["spec.selector"]


def test_lists_of_named_items_allow_additions_and_other_lists_must_contain_each_item() -> None:
    desired = {"env": [{"name": "A", "value": "1"}], "actions": ["Deny"]}
    assert differences(desired, {"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                                 "actions": ["Deny", "Audit"]}) == []
    assert differences(desired, {"env": [{"name": "A", "value": "2"}], "actions": ["Audit"]}) == [
        "env[A].value",
        "actions",
    ]


@settings(max_examples=150, deadline=None)
@given(strategies.specs())
def test_every_rendering_compares_equal_to_itself_after_a_json_round_trip(spec: dict[str, Any]) -> None:
    sbx = sandbox(spec)
    for kind, manifest in (
        (c.ChildKind.POD, render_pod(sbx)),
        (c.ChildKind.NETWORK_POLICY, render_network_policy(sbx)),
        (c.ChildKind.SERVICE, render_service(sbx)),
    ):
        if manifest is not None:
            assert tampered_fields(kind, manifest, owned_view(live(copy.deepcopy(manifest)))) == []


@settings(max_examples=100, deadline=None)
@given(strategies.specs())
def test_a_rendering_carries_its_own_spec_hash(spec: dict[str, Any]) -> None:
    """The decision reads a rendering's spec hash from its annotation instead of hashing it again: the same value."""
    sbx = sandbox(spec)
    for manifest in (render_pod(sbx), render_network_policy(sbx), render_service(sbx)):
        if manifest is not None:
            assert rendered_hash(manifest) == manifest_hash(manifest)
            unannotated = copy.deepcopy(manifest)
            del unannotated["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH]
            assert rendered_hash(unannotated) == manifest_hash(manifest)


@settings(max_examples=100, deadline=None)
@given(strategies.specs(), strategies.specs())
def test_a_remembered_comparison_answers_as_a_new_one_would(spec: dict[str, Any], other: dict[str, Any]) -> None:
    """The operator's summaries keep a child packed, and comparisons of a packed child are remembered: asked again
    (the next pass), or about another rendering (the spec changed), the answer is the one a fresh comparison gives."""
    for rendered in (render_pod(sandbox(spec)), render_network_policy(sandbox(spec))):
        kind = c.ChildKind(rendered["kind"])
        body = live(copy.deepcopy(rendered))
        if kind is c.ChildKind.POD:
            body["spec"]["containers"][0]["image"] = "evil:latest"
        for desired in (rendered, render_pod(sandbox(other)) if kind is c.ChildKind.POD
                        else render_network_policy(sandbox(other))):
            fresh = tampered_fields(kind, desired, owned_view(body))
            assert tampered_fields(kind, desired, packed_owned_view(body)) == fresh
            assert tampered_fields(kind, desired, packed_owned_view(body)) == fresh  # from memory


def test_the_labels_and_owner_comparison_is_not_answered_by_the_whole_rendering() -> None:
    """A pod made from an earlier template is held only to its labels and owner: that comparison carries the same
    spec hash as the whole rendering, and must not be answered with the whole rendering's differences."""
    rendered = render_pod(sandbox())
    body = live(copy.deepcopy(rendered))
    body["spec"]["containers"][0]["image"] = "other:1"
    assert tampered_fields(c.ChildKind.POD, rendered, packed_owned_view(body)) == ["spec.containers[sandbox].image"]
    assert tampered_fields(c.ChildKind.POD, {"metadata": rendered["metadata"]}, packed_owned_view(body)) == []
    body["metadata"]["labels"]["extra"] = "x"
    assert tampered_fields(c.ChildKind.POD, {"metadata": rendered["metadata"]}, packed_owned_view(body)) == [
        "metadata.labels"
    ]


def test_remembered_comparisons_are_bounded_and_not_shared_with_the_caller() -> None:
    rendered = render_pod(sandbox())
    first = tampered_fields(c.ChildKind.POD, rendered, packed_owned_view(live(copy.deepcopy(rendered))))
    first.append("changed by the caller")
    assert tampered_fields(c.ChildKind.POD, rendered, packed_owned_view(live(copy.deepcopy(rendered)))) == []
    for index in range(decide.COMPARISONS_KEPT + 20):
        body = live(copy.deepcopy(rendered))
        body["metadata"]["labels"]["n"] = str(index)
        tampered_fields(c.ChildKind.POD, rendered, packed_owned_view(body))
    assert len(decide._COMPARED) == decide.COMPARISONS_KEPT


# JSON values as typed API objects hold them: no booleans where numbers go (see k8s.manifest.differences).
_LEAVES = st.one_of(st.text(max_size=4), st.integers(-3, 3), st.none())
_DOCUMENTS = st.recursive(
    st.dictionaries(st.text(min_size=1, max_size=3), _LEAVES, max_size=4),
    lambda inner: st.dictionaries(st.text(min_size=1, max_size=3), inner, min_size=1, max_size=4),
    max_leaves=16,
)


def _leaf_paths(document: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in document.items():
        found += _leaf_paths(value, (*path, key)) if isinstance(value, dict) else [(*path, key)]
    return found


@settings(max_examples=300, deadline=None)
@given(_DOCUMENTS, st.data())
def test_a_changed_field_deep_in_equal_surroundings_is_found(document: dict[str, Any], data: st.DataObject) -> None:
    """Equal parts are passed over at once (Python's own comparison, not a walk): the one changed field beside them
    is still named, and a copy differs in nothing."""
    assert differences(document, copy.deepcopy(document)) == []
    paths = _leaf_paths(document)
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    changed = copy.deepcopy(document)
    holder = changed
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = f"{holder[path[-1]]}\x00changed"
    assert differences(document, changed) == [".".join(path)]
    assert differences(document, packed_owned_view({"metadata": {}, **changed})) == differences(
        document, {"metadata": {}, **changed}
    )


def test_a_comparison_leaves_the_rendering_as_it_was() -> None:
    """The rendering is compared in place (k8s.manifest.rendered_view, no copy): nothing may change it."""
    rendered = render_pod(sandbox({"resources": {"cpu": "0.5", "memory": "1024Mi"}}))
    before = copy.deepcopy(rendered)
    body = live(copy.deepcopy(rendered))
    body["spec"]["containers"][0]["image"] = "other:1"
    body["metadata"]["labels"]["extra"] = "x"
    assert tampered_fields(c.ChildKind.POD, rendered, owned_view(body)) == [
        "metadata.labels", "spec.containers[sandbox].image",
    ]
    assert rendered == before


def test_numbers_and_strings_are_told_apart_even_where_everything_else_is_equal() -> None:
    assert differences({"port": 8080, "name": "http"}, {"port": "8080", "name": "http"}) == ["port"]
    assert differences({"ports": [{"name": "http", "port": 8080}]}, {"ports": [{"name": "http", "port": 8080}]}) == []
