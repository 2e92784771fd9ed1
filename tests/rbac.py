"""What the operator's code needs from RBAC, derived from the code itself (not from a list kept by hand).

Three sources, each read from what the operator actually runs:

- ``sandbox_operator.k8s.client.Kube``: each method the operator's modules call (found in their source) is called
  against a recording API client, with each kind its call sites pass (a constant, or the members of the
  ``kind`` parameter's enum); a call passing a manifest built elsewhere counts for every kind in
  ``kube.PATHS`` the method does not refuse (a method that only writes one kind raises ValueError for
  others). Each recorded request becomes (apiGroup, resource[/subresource], verb); writing RoleBindings
  adds ``bind`` on ClusterRoles, writing admission policy bindings adds ``get`` on the policies' paramKind
  (the API server checks both).
- Kopf's registry after importing every operator module: every resource of an index, event, change or
  daemon handler is listed and watched (change handlers and daemons also patch it, for Kopf's own state).
- Kopf itself: Events (create), CRD observation (list, watch), and peering (list, watch, patch) on
  ``clusterkopfpeerings`` cluster-wide, or ``kopfpeerings`` plus namespace observation when namespaced.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import kubernetes
import yaml

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)

ROOT = Path(__file__).resolve().parent.parent
KOPF_PEERING_GROUP = "kopf.dev"
HTTP_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update"}


def _api_resources() -> dict[str, set[str]]:
    """``{plural: {apiGroup, ...}}`` of every built-in resource (from the Kubernetes client's REST paths),
    and of every CRD shipped in ``crds/``."""
    found: dict[str, set[str]] = {}
    api_dir = Path(kubernetes.__file__).parent / "client" / "api"
    core = re.compile(r"'/api/v1/(?:namespaces/\{namespace\}/)?([a-z]+)")
    grouped = re.compile(r"'/apis/([a-z0-9.-]+)/v[0-9a-z]+/(?:namespaces/\{namespace\}/)?([a-z]+)")
    for source in api_dir.glob("*_api.py"):
        text = source.read_text()
        for plural in core.findall(text):
            found.setdefault(plural, set()).add("")
        for group, plural in grouped.findall(text):
            found.setdefault(plural, set()).add(group)
    for crd_file in (ROOT / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(crd_file.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                found.setdefault(crd["spec"]["names"]["plural"], set()).add(crd["spec"]["group"])
    return found


def resource_of_path(path: str) -> tuple[str, str, bool]:
    """``(apiGroup, resource[/subresource], named)`` of a REST path such as /api/v1/namespaces/x/pods/y/status."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a resource path: {path}")
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]  # namespaces/<ns>/<plural>/...
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
    return group, f"{plural}/{sub}" if sub else plural, bool(name)


def recording_kube(kube_module: Any) -> Any:
    """A ``Kube`` whose requests are recorded (``.calls``: method and path) and answered ``{}``, never sent."""

    class RecordingKube(kube_module.Kube):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__(None)
            self.calls: list[tuple[str, str]] = []

        async def _exchange(self, method: str, path: str, *args: Any) -> tuple[int, bytes]:
            self.calls.append((method, path))
            return 200, b"{}"

    return RecordingKube()


def _arguments(method: Any, kind: str, kube_module: Any) -> dict[str, Any]:
    prefix, _ = kube_module.PATHS[kind]
    api_version = prefix.removeprefix("/apis/").removeprefix("/api/")
    values = {
        "manifest": {"apiVersion": api_version, "kind": kind,
                     "metadata": {"namespace": "ns", "name": "name"}, "spec": {}},
        "kind": kind, "namespace": "ns", "name": "name", "uid": "uid", "old": {}, "new": {}, "patch": {},
        "version": "1",
    }
    arguments = {}
    for parameter in list(inspect.signature(method).parameters.values())[1:]:
        if parameter.name not in values:
            if parameter.default is not inspect.Parameter.empty:
                continue
            raise AssertionError(
                f"Kube.{method.__name__}({parameter.name}=...): teach tests/rbac.py what to pass, so that the "
                "permissions this method needs are derived"
            )
        arguments[parameter.name] = values[parameter.name]
    return arguments


def _operator_modules() -> list[Any]:
    """Every module of the operator package (importing them registers every Kopf handler)."""
    package = importlib.import_module("sandbox_operator")
    names = [m.name for m in pkgutil.walk_packages(package.__path__, "sandbox_operator.")
             if not m.name.endswith("__main__")]
    return [importlib.import_module(name) for name in sorted(names)]


def kube_calls() -> dict[str, set[str] | None]:
    """``{Kube method: kinds}`` for every method the operator calls; kinds is None where the call site does not
    name a constant kind (a manifest built elsewhere, a kind from a plan): any kind in PATHS may reach it."""
    kube = importlib.import_module("sandbox_operator.k8s.client")
    methods = {name for name, _ in inspect.getmembers(kube.Kube, inspect.iscoroutinefunction)}
    calls: dict[str, set[str] | None] = {}
    for module in _operator_modules():
        if module is kube:
            continue
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in methods and node.func.attr not in ("connect", "close", "peering_present")):
                # peering_present lists the peering objects: Kopf's own peering permission (kopf_framework_permissions)
                continue
            receiver = node.func.value
            if not ((isinstance(receiver, ast.Name) and receiver.id == "kube")
                    or (isinstance(receiver, ast.Attribute) and receiver.attr == "kube")):
                continue
            method = getattr(kube.Kube, node.func.attr)
            parameters = list(inspect.signature(method).parameters)[1:]
            kinds: set[str] | None = None
            if "kind" in parameters:
                argument = next((k.value for k in node.keywords if k.arg == "kind"), None)
                if argument is None and len(node.args) > parameters.index("kind"):
                    argument = node.args[parameters.index("kind")]
                try:
                    kinds = {str(eval(compile(ast.Expression(argument), "<kind>", "eval"), vars(module)))}
                except Exception:  # not a constant: fall back to the parameter's annotation, if an enum
                    annotation = inspect.signature(method).parameters["kind"].annotation
                    enum = eval(annotation, vars(kube)) if isinstance(annotation, str) else annotation
                    kinds = {str(k) for k in enum} if isinstance(enum, type) and issubclass(enum, Enum) else None
            elif "manifest" not in parameters:
                kinds = set()  # a method with a fixed kind: called once below
            previous = calls.get(node.func.attr, set())
            calls[node.func.attr] = None if kinds is None or previous is None else previous | kinds
    return calls


def kube_permissions() -> set[Permission]:
    """Permissions of every request the operator's calls of ``Kube`` methods send."""
    kube = importlib.import_module("sandbox_operator.k8s.client")
    needed: set[Permission] = set()
    for name, kinds in kube_calls().items():
        method = getattr(kube.Kube, name)
        for kind in sorted(kube.PATHS if kinds is None else kinds or [next(iter(kube.PATHS))]):
            recorder = recording_kube(kube)
            try:
                asyncio.run(method(recorder, **_arguments(method, kind, kube)))
            except ValueError:
                continue  # the method refuses a manifest of this kind: it can never write it
            for http_method, path in recorder.calls:
                group, resource, named = resource_of_path(path)
                if http_method == "GET":
                    verb = "get" if named else "list"
                elif http_method == "DELETE":
                    verb = "delete" if named else "deletecollection"
                else:
                    verb = HTTP_VERBS[http_method]
                needed.add((group, resource, verb))
    if any(p[:2] == ("rbac.authorization.k8s.io", "rolebindings") and p[2] in ("create", "patch") for p in needed):
        # Writing a RoleBinding needs `bind` on the role it grants (or every permission in it): escalation check.
        needed.add(("rbac.authorization.k8s.io", "clusterroles", "bind"))
    if any(p[:2] == ("admissionregistration.k8s.io", "validatingadmissionpolicybindings")
           and p[2] in ("create", "patch") for p in needed):
        # A binding's paramRef is checked like a grant: its writer must be able to `get` the policy's paramKind.
        needed |= {(group, plural, "get") for group, plural in _policy_param_resources()}
    return needed


def _policy_param_resources() -> set[tuple[str, str]]:
    """(apiGroup, plural) of the paramKind of every ValidatingAdmissionPolicy shipped in deploy/."""
    kinds = {}
    for crd_file in (ROOT / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(crd_file.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                kinds[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = crd["spec"]["names"]["plural"]
    found = set()
    for manifest in (ROOT / "deploy").glob("*.yaml"):
        for obj in yaml.safe_load_all(manifest.read_text()):
            param = (obj or {}).get("spec", {}).get("paramKind") if (obj or {}).get("kind") == (
                "ValidatingAdmissionPolicy") else None
            if param:
                group = param["apiVersion"].rpartition("/")[0]
                found.add((group, kinds[(group, param["kind"])]))
    return found


def kopf_handler_permissions() -> set[Permission]:
    """Permissions Kopf needs for the resources the operator's handlers and indices are registered for."""
    _operator_modules()
    from kopf._core.intents import registries

    registry = registries.get_default_registry()
    known = _api_resources()
    needed: set[Permission] = set()
    for sub, verbs in (
        (registry._indexing, ("list", "watch")),
        (registry._watching, ("list", "watch")),
        (registry._changing, ("list", "watch", "patch")),
        (registry._spawning, ("list", "watch", "patch")),
        (registry._webhooks, ()),
    ):
        for handler in sub.get_all_handlers():
            selector = handler.selector
            if selector is None:
                continue
            plural = selector.plural or selector.any_name
            groups = {selector.group} if selector.group is not None else known.get(plural or "", set())
            if selector.group is None and groups != {""} and "" not in groups:
                raise AssertionError(f"cannot resolve the API group of {selector}: name the group in the handler")
            group = selector.group if selector.group is not None else ""
            needed |= {(group, plural, verb) for verb in verbs}
    return needed


def followed_permissions() -> set[Permission]:
    """The kinds the operator's own streams list and watch (k8s.watch)."""
    _operator_modules()
    from sandbox_operator.k8s.watch import FOLLOWED

    return {(kind.group, kind.plural, verb) for kind in FOLLOWED.listeners for verb in ("list", "watch")}


def kopf_framework_permissions(clusterwide: bool) -> set[Permission]:
    """What Kopf needs whatever the handlers are: Events, CRD observation, peering (and namespaces if namespaced)."""
    peering = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    needed = {
        ("", "events", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        *((KOPF_PEERING_GROUP, peering, verb) for verb in ("list", "watch", "patch")),
    }
    if not clusterwide:
        needed |= {("", "namespaces", "list"), ("", "namespaces", "watch")}
    return needed


def required_permissions(clusterwide: bool = True) -> set[Permission]:
    """Everything the operator needs, cluster-wide or watching a list of namespaces."""
    return (kube_permissions() | kopf_handler_permissions() | followed_permissions()
            | kopf_framework_permissions(clusterwide))


def granted_permissions(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    """Expand ClusterRole rules into permissions (no wildcards allowed: least privilege is spelled out)."""
    granted: set[Permission] = set()
    for rule in rules:
        for value in (*rule.get("apiGroups", []), *rule.get("resources", []), *rule.get("verbs", [])):
            assert value != "*", f"wildcard in rule {rule}"
        assert not rule.get("nonResourceURLs"), f"non-resource URLs in rule {rule}"
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return granted
