"""One reconcile loop for every kind: one pass at a time per object, triggers folded into one more pass, a wake-up
at a time (a deadline, a wait), bounded backoff after a failure, and one place where errors are counted and logged.

A kind supplies its pass: an async function that observes, decides (pure) and acts, and reports a ``PassResult``.
Per-object state lives in each kind's table (Sandboxes, pools, Tenants), dropped with the object's DELETED event or a
listing without it: nothing here grows without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sandbox_operator import metrics
from sandbox_operator.k8s import codec
from sandbox_operator.k8s.client import KubeError
from sandbox_operator.k8s.manifest import RepairStreaks
from sandbox_operator.k8s.redaction import redact
from sandbox_operator.k8s.watch import put_off

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = 300.0
# A deadline years away is looked at daily anyway: the wall clock may have been set right in between.
MAX_WAKEUP_DELAY = 86400.0
# +50ms: wake just after a deadline, never a hair before it.
WAKEUP_MARGIN = 0.05


@dataclass
class ObjectState:
    """What one object's reconciliations share."""

    uid: str = ""  # the object's: another of the same name is another object
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The newest body seen, as compact JSON: a tenth of the memory of the parsed dicts, which a pass makes once.
    packed: bytes | None = None
    version: int = -1
    wakeup: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    dirty: bool = False
    failures: int = 0
    deleted: bool = False
    repairs: RepairStreaks = field(default_factory=RepairStreaks)
    # Values no log line may carry (a Sandbox's literal env values), set by the pass that read them.
    secrets: list[str] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any] | None:
        """The newest body seen (a fresh copy on every access: read it once per pass)."""
        return codec.loads(self.packed) if self.packed is not None else None

    def remember(self, body: Mapping[str, Any]) -> None:
        """Keep the newest body seen, whether it came from the watch or from our own status write."""
        version = resource_version(body)
        if self.packed is None or version >= self.version:
            # managedFields are often the biggest part of a body and no decision reads them.
            meta = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
            kept = {key: body[key] for key in body if key != "metadata"} | {"metadata": meta}
            self.packed = codec.dumps(kept)
            self.version = version

    def forget(self) -> None:
        """The object is gone: no more passes, no wake-up."""
        self.deleted = True
        if self.wakeup is not None:
            self.wakeup.cancel()
            self.wakeup = None


K = TypeVar("K")
S = TypeVar("S", bound=ObjectState)


def track(table: dict[K, S], key: K, uid: str, event_type: str | None, new: Callable[[str], S],
          forget: Callable[[K, S], None]) -> S | None:
    """The object's state in ``table`` after a watch event of it, or None when the event says it went (``forget`` is
    called for it). The DELETED event of an older object of that name changes nothing; an object replaced under the
    same name while the watch was broken (it never said it went) is forgotten, and its successor gets new state."""
    state = table.get(key)
    if event_type == "DELETED":
        if state is not None and state.uid == uid:
            forget(key, state)
        return None
    if state is None or state.uid != uid:
        if state is not None:
            forget(key, state)
        state = table[key] = new(uid)
    return state


def forget_unlisted(table: dict[K, S], uids: set[str], in_scope: Callable[[K], bool],
                    forget: Callable[[K, S], None]) -> None:
    """A (re)listing found ``uids``: forget the objects in scope it did not find (deleted while the watch was
    broken: no DELETED event came)."""
    for key, state in list(table.items()):
        if in_scope(key) and state.uid not in uids:
            forget(key, state)


def record_repair(state: ObjectState, kind: str, now: datetime) -> None:
    """Count a repair of one of the object's children, and a fight when it continues a streak."""
    metrics.REPAIRS.labels(kind).inc()
    if state.repairs.record(kind, now):
        metrics.REPAIR_CONFLICTS.labels(kind).inc()


def resource_version(body: Mapping[str, Any] | None) -> int:
    """The body's resourceVersion as a number (0 when it has none)."""
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class PassResult:
    """What one pass reports: when to look again (None: on the next event), and whether it failed and why (the
    metric's kind: "rejected", "decide"...; the next pass comes after a backoff). ``error`` is a decision that
    raised, logged here with its traceback (never its text, which may quote the spec)."""

    requeue_at: datetime | None = None
    failed: str | None = None
    error: BaseException | None = None


Pass = Callable[[], Awaitable[PassResult]]


async def reconcile(state: ObjectState, one_pass: Pass, *, what: str, trigger: str) -> None:
    """Run ``one_pass`` for the object; a trigger arriving while a pass runs is folded into one more pass after it, so
    a burst of events (fifty pods starting) costs a few passes, not fifty."""
    state.dirty = True
    if put_off():
        # Another replica is active: nothing is written now, and nothing is lost either: when this replica resumes,
        # every object gets a pass (``Followed.on_resume``), which finds what came due meanwhile.
        return
    if state.lock.locked():
        return
    async with state.lock:
        while state.dirty and not state.deleted:
            if put_off():  # paused while a pass ran: the trigger folded into it waits for the resume, as above
                return
            state.dirty = False
            metrics.RECONCILES.labels(trigger).inc()
            started = time.monotonic()
            result = await _guarded(state, one_pass, what)
            if logger.isEnabledFor(logging.DEBUG):  # a line per pass: at DEBUG only (LOG_LEVEL), a burst makes many
                logger.debug("%s: pass (%s) in %.1f ms%s%s", what, trigger, 1000 * (time.monotonic() - started),
                             f"; failed ({result.failed})" if result.failed else "",
                             f"; again at {result.requeue_at:%H:%M:%S}" if result.requeue_at else "")
            delay = None
            if result.failed is None:
                state.failures = 0
            else:
                state.failures += 1
                delay = min(MAX_RETRY_DELAY, 2.0**state.failures)
            _schedule(state, result.requeue_at, delay, lambda: reconcile(state, one_pass, what=what, trigger="timer"))


async def _guarded(state: ObjectState, one_pass: Pass, what: str) -> PassResult:
    """Run the pass; count and log what went wrong, the same way for every kind."""
    try:
        result = await one_pass()
    except KubeError as failure:
        kind = "temporary" if failure.transient else "rejected"
        metrics.RECONCILE_ERRORS.labels(kind).inc()
        logger.warning("%s: %s; retrying with backoff", what, redact(str(failure), state.secrets))
        return PassResult(failed=kind)
    except Exception as failure:  # a bug: the traceback says where, the text may quote the spec
        metrics.RECONCILE_ERRORS.labels("unexpected").inc()
        logger.error("%s: reconcile failed (%s); retrying with backoff\n%s", what, type(failure).__name__,
                     "".join(traceback.format_tb(failure.__traceback__)))
        return PassResult(failed="unexpected")
    if result.failed is not None:
        metrics.RECONCILE_ERRORS.labels(result.failed).inc()
    if result.error is not None:
        logger.error("%s: could not decide (%s); retrying with backoff\n%s", what, type(result.error).__name__,
                     "".join(traceback.format_tb(result.error.__traceback__)))
    return result


def _schedule(
    state: ObjectState, at: datetime | None, delay: float | None, again: Callable[[], Awaitable[None]]
) -> None:
    """Wake the object again at ``at`` or after ``delay`` seconds, whichever is first (neither: on the next event)."""
    if state.wakeup is not None:
        state.wakeup.cancel()
        state.wakeup = None
    if state.deleted:
        return
    delays = [d for d in (delay, (at - datetime.now(UTC)).total_seconds() if at else None) if d is not None]
    if not delays:
        return
    loop = asyncio.get_running_loop()

    def fire() -> None:
        state.task = loop.create_task(again())  # type: ignore[arg-type]

    state.wakeup = loop.call_later(min(MAX_WAKEUP_DELAY, max(0.0, min(delays))) + WAKEUP_MARGIN, fire)
