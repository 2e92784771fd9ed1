"""What the operator knows of the objects it watches but does not reconcile itself (a Sandbox's pod and policy, a
template, a Tenant's lifetime rules): the newest summary of each, by key.

Why not Kopf's ``@kopf.index``: Kopf holds every handler of every kind until each indexed object has been through its
index handler once, with one readiness toggle per object and every toggle dropped waking every waiting worker. That
start-up gate costs time and CPU quadratic in the number of objects (78 s for 1,000 sandboxes, 367 s for 3,000), and
new Sandboxes wait behind it.

Every store is fed by the operator's own streams (k8s.watch), whose first listing is the one gate, and trimmed to
every new listing (``retain``). (Templates and Tenants were once filled by a LIST before Kopf started and trusted for
two minutes until Kopf's watch confirmed them: a standby paused for longer than that forgot them.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class Store(Generic[K, V]):
    """One value per key, with the uid of the object it came from (so the DELETED event of an object replaced under
    the same key does not remove its successor)."""

    items: dict[K, tuple[str, V]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key: K) -> V | None:
        """The value under ``key``, or None."""
        item = self.items.get(key)
        return item[1] if item is not None else None

    def put(self, key: K, uid: str, value: V) -> None:
        """The watch saw the object (so it exists, as of that event)."""
        self.items[key] = (uid, value)

    def remove(self, key: K, uid: str) -> bool:
        """The watch saw the object go; True when that removed the key's value."""
        item = self.items.get(key)
        if item is None or (uid and item[0] != uid):
            return False
        del self.items[key]
        return True

    def record(self, event_type: str | None, key: K, uid: str, value: Callable[[], V]) -> bool:
        """Apply a watch event (``value`` summarises the body); True unless it changed nothing the store holds (a
        DELETED event always counts: its owner looks again)."""
        if event_type == "DELETED":
            self.remove(key, uid)
            return True
        before, summary = self.items.get(key), value()
        self.put(key, uid, summary)
        return before != (uid, summary)

    def retain(self, uids: set[str], in_scope: Callable[[K], bool]) -> list[K]:
        """A new listing found ``uids``: drop the values in scope whose object it did not find (deleted while the
        watch was broken, with no DELETED event); return the keys dropped."""
        dropped = [key for key, (uid, _) in self.items.items() if in_scope(key) and uid not in uids]
        for key in dropped:
            del self.items[key]
        return dropped
