"""Manifests the operator renders and the live objects they become: the spec hash a child carries, the summary of a
child the decisions read, and whether a live object still says what was rendered for it (fields, not the hash).

``differences(desired, live)`` lists the paths where the live object departs from the rendered manifest. What the
operator sets must be present and equal; what the API server or an admission webhook adds beside it is left alone,
except under the ``exact`` paths, where an extra key or list item changes meaning (a NetworkPolicy rule or selector,
a pod's labels, which other NetworkPolicies select on). The comparison knows what the API server does to a value on
its way in: it drops zero values (``false``, ``0``, ``""``, ``[]``, ``{}``) and rewrites quantities ("0.5" comes back
as "500m").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import parse_quantity
from sandbox_operator.k8s import codec

HASH_ANNOTATION_LENGTH = 16
MAX_K8S_NAME = 63
# Keys whose values (and whose children's values) are Kubernetes quantities.
QUANTITY_KEYS = frozenset({"limits", "requests", "sizeLimit", "hard", "default", "defaultRequest", "max", "min"})
# The parts of a child the operator owns and compares: its labels, owner references and spec. Annotations other than
# the operator's own are left to others (kubectl and tools add their own).
OWNED_METADATA = ("labels", "ownerReferences")


def owned_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object the operator renders and compares: metadata labels and owner references, and the rest
    of the body but its status (spec for most kinds; subjects and roleRef for a RoleBinding). A copy, to keep."""
    return _owned(body, _plain)


def rendered_view(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``owned_view`` of a rendered manifest, sharing its values (no copy): for a comparison, which only reads. A
    listed pass compares each child with its rendering, and the copy was a third of that."""
    return _owned(manifest, _same)


def _owned(body: Mapping[str, Any], take: Callable[[Any], Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    view: dict[str, Any] = {"metadata": {key: take(meta[key]) for key in OWNED_METADATA if key in meta}}
    for key, value in body.items():
        if key not in ("metadata", "status", "apiVersion", "kind"):
            view[key] = take(value)
    return view


def _same(value: Any) -> Any:
    return value


class Packed(Mapping[str, Any]):
    """A JSON object kept as compact bytes, parsed again on each use: a summary keeps the fields it compares for as
    long as its object lives (10,000 pods), and as parsed dicts they were a third of the operator's memory."""

    __slots__ = ("data",)

    def __init__(self, value: Mapping[str, Any]) -> None:
        self.data = codec.dumps(value)

    def unpack(self) -> dict[str, Any]:
        """The object, parsed (a fresh copy)."""
        return codec.loads(self.data)  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self.unpack()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.unpack())

    def __len__(self) -> int:
        return len(self.unpack())

    def __eq__(self, other: object) -> bool:
        return self.data == other.data if isinstance(other, Packed) else super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Packed({self.data.decode()})"


def packed_owned_view(body: Mapping[str, Any]) -> Packed:
    """``owned_view(body)``, kept packed (see Packed)."""
    return Packed(_owned(body, _same))


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """Hash of a manifest without its hash annotation: equal hashes mean the child still matches the spec."""
    meta = dict(manifest.get("metadata", {}))
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k != c.ANNOTATION_SPEC_HASH}
    meta["annotations"] = annotations
    canonical = json.dumps({**manifest, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_ANNOTATION_LENGTH]


def rendered_hash(manifest: Mapping[str, Any]) -> str:
    """The spec hash of a rendered manifest: the one ``with_spec_hash`` gave it (the same value, not computed again:
    a pod's canonical JSON is the largest part of a pass), else computed."""
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    carried = annotations.get(c.ANNOTATION_SPEC_HASH)
    return carried if isinstance(carried, str) and carried else manifest_hash(manifest)


@dataclass(frozen=True)
class ChildSummary:
    """A child other than the pod: its name, the spec hash it was created from and the fields the operator owns."""

    name: str
    spec_hash: str | None = None
    owned: Mapping[str, Any] | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChildSummary:
        """Summarise a child's body."""
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            spec_hash=(meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH),
            owned=packed_owned_view(body),
        )


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """The controller owner reference to one of this API's objects: the garbage collector deletes the child with it."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_name(child: Mapping[str, Any], kind: str) -> str | None:
    """The name of the object of ``kind`` (this API's) that the child's controller owner reference names, if any."""
    for ref in (child.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind and ref.get("apiVersion") == c.API_VERSION:
            return str(ref.get("name"))
    return None


def owned_by(child: Mapping[str, Any], uid: str) -> bool:
    """Whether the object's controller owner reference is the object with this uid."""
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def bounded_name(stem: str, suffix: str = "") -> str:
    """``<stem><suffix>``, or, when that is too long for a DNS label, the stem cut and ended by a hash of the whole
    (so two long stems never give the same name)."""
    full = f"{stem}{suffix}"
    if len(full) <= MAX_K8S_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    head = full[: MAX_K8S_NAME - len(suffix) - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}{suffix}"


def child_metadata(
    name: str, namespace: str | None, labels: Mapping[str, str], owner: Mapping[str, Any]
) -> dict[str, Any]:
    """The metadata of a rendered child (namespaced unless ``namespace`` is None); the spec hash is added last."""
    meta: dict[str, Any] = {"name": name, "labels": dict(labels), "annotations": {}, "ownerReferences": [dict(owner)]}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with the hash of everything else in it as its spec-hash annotation."""
    manifest["metadata"].setdefault("annotations", {})[c.ANNOTATION_SPEC_HASH] = manifest_hash(manifest)
    return manifest


def _plain(value: Any) -> Any:
    """A deep copy made of dicts, lists and scalars (Kopf hands over read-only views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _is_zero(value: Any) -> bool:
    return value is None or value is False or value == 0 or value in ("", [], {})


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _scalar_equal(desired: Any, live: Any, quantity: bool) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if quantity and isinstance(desired, int | str) and isinstance(live, int | str):
        try:
            return parse_quantity(desired) == parse_quantity(live)
        except ValueError:
            return False
    return False


def _named(items: Sequence[Any]) -> bool:
    return all(isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in items)


def _equal(desired: Any, live: Any, quantity: bool) -> bool:
    """Exact equality up to the API server's zero-value dropping and quantity rewriting."""
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        keys = {k for k, v in desired.items() if not _is_zero(v)} | {k for k, v in live.items() if not _is_zero(v)}
        return all(_equal(desired.get(k), live.get(k), quantity or k in QUANTITY_KEYS) for k in keys)
    if isinstance(desired, list) and isinstance(live, list):
        return len(desired) == len(live) and all(_equal(d, v, quantity) for d, v in zip(desired, live, strict=True))
    if _is_zero(desired) and _is_zero(live):
        return True
    return _scalar_equal(desired, live, quantity)


def differences(
    desired: Any, live: Any, exact: Iterable[str] = (), path: str = "", quantity: bool = False
) -> list[str]:
    """Paths (``spec.containers[sandbox].image``) where ``live`` departs from ``desired``; empty when it does not."""
    if isinstance(live, Packed):
        live = live.unpack()
    if desired == live:
        # Equal parts (most of a child) are passed over at C speed: the walk below was most of a listed pass. Python's
        # equality takes True for 1, which the walk would not; no API object holds a boolean where a number goes.
        return []
    exact = frozenset(exact)
    if path in exact:
        return [] if _equal(desired, live, quantity) else [path or "."]
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [] if _is_zero(desired) and _is_zero(live) else [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            where = _join(path, str(key))
            if key not in live:
                if not _is_zero(value):
                    found.append(where)
                continue
            found += differences(value, live[key], exact, where, quantity or key in QUANTITY_KEYS)
        return found
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [] if _is_zero(desired) and _is_zero(live) else [path]
        return _list_differences(desired, live, exact, path, quantity)
    return [] if _scalar_equal(desired, live, quantity) or (_is_zero(desired) and _is_zero(live)) else [path]


def _list_differences(
    desired: list[Any], live: list[Any], exact: frozenset[str], path: str, quantity: bool
) -> list[str]:
    """Named items (containers, volumes, env, ports) are matched by name and may have others beside them; other lists
    (tolerations, owner references, a binding's validationActions) must contain each rendered item. Under an exact
    path lists must be equal, in order."""
    if desired and _named(desired) and _named(live):
        by_name = {item["name"]: item for item in live}
        found: list[str] = []
        for item in desired:
            where = f"{path}[{item['name']}]"
            if item["name"] not in by_name:
                found.append(where)
            else:
                found += differences(item, by_name[item["name"]], exact, where, quantity)
        return found
    if all(isinstance(item, Mapping) for item in desired):
        missing = any(all(differences(item, other, (), "", quantity) for other in live) for item in desired)
    else:
        missing = any(not any(_equal(item, other, quantity) for other in live) for item in desired)
    return [path] if missing else []


# A repair needed again within this time of the last one continues a streak; the n-th repair of a streak waits 2**n
# seconds (at most MAX_REPAIR_DELAY) after the one before.
REPAIR_STREAK_WINDOW = timedelta(minutes=5)
MAX_REPAIR_DELAY = 300.0


@dataclass
class RepairStreaks:
    """The repairs made to one object's children, by child kind: the first is made at once; one needed again soon
    after is another writer fighting over a field, and waits longer each time, so a fight costs a few writes (and a
    metric), not a storm."""

    last: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def held(self, now: datetime) -> dict[str, datetime]:
        """Child kinds whose next repair must wait, and until when."""
        held = {}
        for kind, (streak, at) in list(self.last.items()):
            if now - at > REPAIR_STREAK_WINDOW:
                del self.last[kind]
                continue
            until = at + timedelta(seconds=min(MAX_REPAIR_DELAY, 2.0**streak))
            if until > now:
                held[kind] = until
        return held

    def record(self, kind: str, now: datetime) -> bool:
        """Note a repair of ``kind``; True when it continues a streak (a fight with another writer)."""
        streak, at = self.last.get(kind, (0, now))
        streak = streak + 1 if now - at <= REPAIR_STREAK_WINDOW else 1
        self.last[kind] = (streak, now)
        return streak > 1
