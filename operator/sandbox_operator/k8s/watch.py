"""The kinds the operator only reads, watched without Kopf's per-object machinery.

A Sandbox's pod, NetworkPolicy, Service and claim (and a pool's warm pods and fence, a namespace's fence, a Tenant's
policy, a template) are never reconciled for themselves: each of their events only updates a summary and wakes the
owner (or the users). Through Kopf every such
event went through a per-object worker, its memory, its causation and handler selection: a third of the operator's
CPU in a burst (four pod events per Sandbox), and at a restart all of it again for every child Kopf listed, after the
stores had been filled by a LIST of their own. Here each kind is one Kopf list+watch stream (``infinite_watch``:
chunked listing, resumption, 410 re-listing and credentials, all Kopf's own), whose events go
straight to the listeners, in order, on the event loop.

Kopf pauses its own watchers while another replica is active (peering) and re-lists when it resumes. These streams do
not pause: a standby keeps its stores current, as a controller-runtime standby keeps its informers, so a takeover
lists nothing (next to 10,000 Sandboxes, some 95 MB of JSON) and a new Sandbox is served as soon as this replica
resumes. What pauses is the writing: no pass runs while paused (``k8s.loop``), and each kind passes over its objects
when this replica resumes (``Followed.on_resume``). Kopf's pause is read from its own watchers (``_capture_pause``).
After a 410 re-listing, a listener's stores are trimmed to the new listing (``Listener.relisted``), so an object
deleted meanwhile does not stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import aiohttp
import kopf
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api, watching
from kopf._cogs.structs import references
from kopf._core.engines import peering, posting

from sandbox_operator.api import names as c
from sandbox_operator.k8s import codec

logger = logging.getLogger(__name__)

RESTART_DELAY = 5.0
# A replica that withdraws from the peering (a SIGTERM) first lets the passes it started end, for this long at most.
LEAVING_GRACE_SECONDS = 2.0
# How long a pass waits for a kind's new listing after its stream broke (``wait_kind_listed``).
CURRENT_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Listener:
    """What one part of the operator wants of a watched kind: which objects (``wants``), what to do with each event
    (``changed``: event type, None for an object of a listing; it must not block) and what to do after a (re)listing
    with the uids it found in ``namespace`` (None: every namespace): drop what is no longer there."""

    wants: Callable[[Mapping[str, Any]], bool]
    changed: Callable[[str | None, Mapping[str, Any]], None]
    relisted: Callable[[str | None, set[str]], None] = lambda namespace, uids: None


@dataclass(frozen=True)
class Kind:
    """A watched kind, as the API serves it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    def resource(self) -> references.Resource:
        """Kopf's handle of the kind."""
        return references.Resource(group=self.group, version=self.version, plural=self.plural, kind=self.kind,
                                   namespaced=self.namespaced, verbs=frozenset({"list", "watch"}))


PODS = Kind("", "v1", "pods", "Pod")
SERVICES = Kind("", "v1", "services", "Service")
PVCS = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
NETWORK_POLICIES = Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
SANDBOXES = Kind(c.GROUP, c.VERSION, c.PLURAL, c.KIND)
TEMPLATES = Kind(c.GROUP, c.VERSION, c.TEMPLATE_PLURAL, c.TEMPLATE_KIND)
POOLS = Kind(c.GROUP, c.VERSION, c.POOL_PLURAL, c.POOL_KIND)
TENANTS = Kind(c.GROUP, c.VERSION, c.TENANT_PLURAL, c.TENANT_KIND, namespaced=False)  # one stream, cluster-wide


@dataclass
class Followed:
    """Every watched kind's listeners, and whether each kind's first listing is in (one per process, like Kopf's
    registry)."""

    listeners: dict[Kind, list[Listener]] = field(default_factory=dict)
    pending: set[tuple[Kind, str | None]] = field(default_factory=set)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    # The streams without a current listing: not listed yet, or broken since (a 410; ``_capture_pause``), until
    # their next listing is in; and per kind, whether none of its streams is (``wait_kind_listed``).
    unlisted: set[tuple[Kind, str | None]] = field(default_factory=set)
    current: dict[Kind, asyncio.Event] = field(default_factory=dict)
    overdue: set[Kind] = field(default_factory=set)  # warned of: no new listing for CURRENT_WAIT_SECONDS
    # Kinds whose first listing starts once every other kind's is in (``list_later``), and whether those are.
    later: set[Kind] = field(default_factory=set)
    others_listed: asyncio.Event = field(default_factory=asyncio.Event)
    pause: aiotoggles.ToggleSet | None = None
    pause_found: asyncio.Event = field(default_factory=asyncio.Event)
    # What each kind does when this replica resumes after a pause (a takeover): pass over its objects; and whether a
    # pass was put off because this replica was paused (``put_off``), so that the next resume must.
    resumed: list[Callable[[], None]] = field(default_factory=list)
    deferred: asyncio.Event = field(default_factory=asyncio.Event)
    # This replica is withdrawing from the peering (shutting down): it counts as paused from then on
    # (``_withdraw_quietly``).
    leaving: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # When each (plural, namespace) stream last started listing or watching unpaused (``_capture_pause``).
    streaming_since: dict[tuple[str, str | None], float] = field(default_factory=dict)
    # Kopf's Event queue (and its loop), as its handlers see it: what ``kopf.event`` posts to (``_capture_posting``).
    posting: tuple[asyncio.AbstractEventLoop, Any] | None = None

    def listen(self, kind: Kind, listener: Listener) -> None:
        """Register a listener (at import, like a Kopf handler)."""
        self.listeners.setdefault(kind, []).append(listener)

    def list_later(self, *kinds: Kind) -> None:
        """At a start, list ``kinds`` only once every other kind is listed: the listings share one event loop, so
        the ones a new object's service waits for come in sooner without these beside them."""
        self.later.update(kinds)

    def on_resume(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time this replica resumes after a pause (at import, like a Kopf handler). No pass
        runs while paused, and a standby has run none at all: the callback must give every object of its kind a pass
        (it must not block)."""
        self.resumed.append(callback)

    def check_others_listed(self) -> None:
        """Let the kinds listed later start when every other stream has listed (at a start, once)."""
        if not any(kind not in self.later for kind, _ in self.pending):
            self.others_listed.set()

    def paused(self) -> bool:
        """Whether Kopf has paused the operator (another replica is active), or it is leaving the peering; False
        until Kopf's watchers start."""
        return self.leaving or (self.pause is not None and self.pause.is_on())


FOLLOWED = Followed()


_TASKS: set[asyncio.Task[None]] = set()


def spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run an owner's pass started by a stream event, keeping the task until it is done (the event loop holds tasks
    only weakly)."""
    task = asyncio.get_running_loop().create_task(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


def paused() -> bool:
    """Whether this replica is paused: it must write nothing until it resumes (``Followed.on_resume``)."""
    return FOLLOWED.paused()


def put_off() -> bool:
    """Whether this replica is paused, in which case the caller's pass is put off: once the replica resumes, every
    kind passes over its objects (``Followed.on_resume``)."""
    if not FOLLOWED.paused():
        return False
    FOLLOWED.deferred.set()
    return True


def listed() -> bool:
    """Whether every watched kind has been listed once (the start-up gate is open)."""
    return FOLLOWED.listed.is_set()


async def wait_listed() -> None:
    """Until every watched kind has been listed once: a pass that ran before would not see the children."""
    if not FOLLOWED.listed.is_set():
        await FOLLOWED.listed.wait()


def kind_listed(kind: Kind) -> bool:
    """Whether every stream of ``kind`` has a current listing (a kind nobody listens to counts as listed)."""
    return kind not in FOLLOWED.listeners or _current(kind).is_set()


async def wait_kind_listed(kind: Kind) -> None:
    """Until every stream of ``kind`` has a current listing: at a start, until its first listing is in; after a
    410 re-listing, until the new one is in, for ``CURRENT_WAIT_SECONDS`` at most (a stream
    that stays broken must not hold every pass: what it listed last is still known). A kind nobody listens to is
    never listed, and is not waited for."""
    if kind_listed(kind):
        return
    current = _current(kind)
    if any(pending == kind for pending, _ in FOLLOWED.pending):
        await current.wait()
        return
    try:
        await asyncio.wait_for(current.wait(), CURRENT_WAIT_SECONDS)
    except TimeoutError:
        if kind not in FOLLOWED.overdue:
            FOLLOWED.overdue.add(kind)
            logger.warning("%s have not been listed again for %.0f s: going on with what was listed last",
                           kind.plural, CURRENT_WAIT_SECONDS)


def _current(kind: Kind) -> asyncio.Event:
    """Whether every stream of ``kind`` has a current listing (set) or not (clear); made on first use."""
    event = FOLLOWED.current.get(kind)
    if event is None:
        event = FOLLOWED.current[kind] = asyncio.Event()
    return event


def _followed_kind(resource: references.Resource) -> Kind | None:
    return next((kind for kind in FOLLOWED.listeners
                 if (kind.group, kind.plural) == (resource.group, resource.plural)), None)


def _capture_posting() -> None:
    """Note Kopf's Event queue (and its loop) when Kopf starts its poster: ``kopf.event`` finds them in context
    variables that Kopf sets only for its own per-object workers, so the streams set them for the passes they start
    (pinned in tests/unit/test_watch.py). The upstream fix would be a ``kopf.event`` that works from any task of the
    operator's loop."""
    original = posting.poster
    if getattr(original, "captures_queue", False):
        return

    async def poster(*, event_queue: posting.K8sEventQueue, **kwargs: Any) -> NoReturn:
        FOLLOWED.posting = (asyncio.get_running_loop(), event_queue)
        await original(event_queue=event_queue, **kwargs)

    poster.captures_queue = True  # type: ignore[attr-defined]
    posting.poster = poster


def _capture_pause() -> None:
    """Read Kopf's pause toggles from the first of its own watchers to start (pinned in tests/unit/test_watch.py).
    The upstream fix would be a public accessor, e.g. ``kopf.on.startup`` handlers receiving ``operator_paused``."""
    original = watching.streaming_block
    if getattr(original, "captures_pause", False):
        return

    @contextlib.asynccontextmanager
    async def streaming_block(
        *, resource: references.Resource, namespace: references.Namespace,
        operator_paused: aiotoggles.ToggleSet | None = None,
    ) -> AsyncIterator[Any]:
        if operator_paused is not None and FOLLOWED.pause is None:
            FOLLOWED.pause = operator_paused
            FOLLOWED.pause_found.set()
        try:
            async with original(resource=resource, namespace=namespace, operator_paused=operator_paused) as waiter:
                FOLLOWED.streaming_since[(resource.plural, namespace)] = time.monotonic()  # not paused (any more)
                yield waiter
        finally:  # re-listing (a 410), or (Kopf's own watchers) paused: not current until the next listing is in
            kind = _followed_kind(resource)
            if kind is not None:
                FOLLOWED.unlisted.add((kind, namespace))
                _current(kind).clear()

    streaming_block.captures_pause = True  # type: ignore[attr-defined]
    streaming_block.__wrapped__ = original  # type: ignore[attr-defined]
    watching.streaming_block = streaming_block


def _withdraw_quietly() -> None:
    """Stop passes before Kopf withdraws this replica from the peering (pinned in tests/unit/test_watch.py). At a
    SIGTERM Kopf removes the replica's peering record first and stops the operator's own tasks after, with a grace of
    seconds; a standby resumes as soon as the record goes, and serves from its stores at once. Without this the two
    would both reconcile meanwhile. Now the leaving replica counts as paused from the withdrawal on, and the passes it
    started get ``LEAVING_GRACE_SECONDS`` to end first. The upstream fix would be a Kopf pause toggle that is turned
    on before the withdrawal."""
    original = peering.touch
    if getattr(original, "stops_passes", False):
        return

    async def touch(
        *, identity: peering.Identity, settings: kopf.OperatorSettings, resource: references.Resource,
        namespace: references.Namespace, lifetime: int | None = None,
    ) -> None:
        if lifetime == 0:  # the withdrawal (Kopf's keep-alive on its way out)
            FOLLOWED.leaving = True
            running = [task for task in _TASKS if not task.done()]
            if running:
                await asyncio.wait(running, timeout=LEAVING_GRACE_SECONDS)
        await original(identity=identity, settings=settings, resource=resource, namespace=namespace,
                       lifetime=lifetime)

    touch.stops_passes = True  # type: ignore[attr-defined]
    touch.__wrapped__ = original  # type: ignore[attr-defined]
    peering.touch = touch


# A listing's next page, asked for as soon as the page before it is in: by its path and query (``_page``).
_NEXT_PAGES: dict[tuple[str, frozenset[tuple[str, str]]], asyncio.Task[bytes]] = {}


def _page(url: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """A GET's URL as a key: its path and its query's parameters, in any order."""
    parts = urllib.parse.urlsplit(url)
    return parts.path, frozenset(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))


def _next_page(url: str, token: str) -> str:
    """The URL of the page after ``url``'s: the same query with the listing's continue token."""
    parts = urllib.parse.urlsplit(url)
    query = [(key, value) for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if key != "continue"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode([*query, ("continue", token)])))


def _parse_faster() -> None:
    """Parse the bodies of Kopf's GETs (its listings, page by page) with ``codec.loads``, and ask for a listing's next
    page while the operator takes in the one it has. At a start next to 10,000 Sandboxes the listings are some 95 MB of
    JSON (pods 55, Sandboxes 25, NetworkPolicies 15), and taking them in is most of the time before a new Sandbox is
    served. Kopf asks for each page once the one before it has gone through the listeners, so the API server waited
    for the operator and the operator for it; now the next page is on its way meanwhile (only its bytes: it is parsed
    when Kopf asks for it, so at most one parsed page is held, as before). Pinned in tests/unit/test_watch.py. The
    upstream fixes would be a decoder in Kopf's settings (``settings.networking``), used by its requests and watch
    streams alike, and a prefetch of the next page in ``fetching.fetch_objs``."""
    original = api.get
    if getattr(original, "parses_faster", False):
        return

    async def read(url: str, request: dict[str, Any]) -> bytes:
        response = await api.request(method="get", url=url, **request)
        async with response:
            return await response.read()

    async def get(  # Kopf's own signature, ``timeout`` included
        url: str, *, payload: object | None = None, headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109
        settings: kopf.OperatorSettings, logger: Any,
    ) -> Any:
        key = _page(url)
        if not any(name == "continue" for name, _ in key[1]):  # a listing's first page: one asked for before is stale
            for stale in [other for other in _NEXT_PAGES if other[0] == key[0]]:
                _NEXT_PAGES.pop(stale).cancel()
        request = {"payload": payload, "headers": headers, "timeout": timeout, "settings": settings, "logger": logger}
        prefetched = _NEXT_PAGES.pop(key, None)
        body = codec.loads(await (prefetched if prefetched is not None else read(url, request)))
        token = (body.get("metadata") or {}).get("continue") if isinstance(body, dict) else None
        if token and isinstance(token, str):
            following = _next_page(url, token)
            task = _NEXT_PAGES[_page(following)] = asyncio.get_running_loop().create_task(read(following, request))
            # A failure reaches Kopf when it asks for the page; one it never asks for (its stream broke) is dropped.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return body

    get.parses_faster = True  # type: ignore[attr-defined]
    get.__wrapped__ = original  # type: ignore[attr-defined]
    api.get = get


_capture_pause()
_capture_posting()
_withdraw_quietly()
_parse_faster()


def start(settings: kopf.OperatorSettings, namespaces: list[str]) -> None:
    """Start one stream per watched kind and namespace (all namespaces when none are given; a cluster-scoped kind
    has one stream), and the task that follows Kopf's pause."""
    scopes: list[str | None] = list(namespaces) or [None]
    FOLLOWED.pending = {(kind, scope) for kind in FOLLOWED.listeners
                        for scope in (scopes if kind.namespaced else [None])}
    FOLLOWED.unlisted = set(FOLLOWED.pending)
    FOLLOWED.check_others_listed()  # nothing to wait for when only kinds listed later are watched
    for kind, scope in sorted(FOLLOWED.pending, key=lambda pair: (pair[0].plural, pair[1] or "")):
        FOLLOWED.tasks.append(asyncio.get_running_loop().create_task(_follow(kind, scope, settings),
                                                                     name=f"watch {kind.plural}"))
    FOLLOWED.tasks.append(asyncio.get_running_loop().create_task(_follow_pause(), name="follow the pause"))


async def stop() -> None:
    """Stop the streams (the operator is shutting down)."""
    for task in FOLLOWED.tasks:
        task.cancel()
    for task in FOLLOWED.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    FOLLOWED.tasks.clear()


async def _follow(kind: Kind, namespace: str | None, settings: kopf.OperatorSettings) -> None:
    """One kind's stream, for the life of the operator: a failure is logged and the stream starts again."""
    await FOLLOWED.pause_found.wait()
    if kind in FOLLOWED.later:
        await FOLLOWED.others_listed.wait()
    while True:
        try:
            await _stream(kind, namespace, settings)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the stream must go on: a sandbox's pod events are how it becomes Ready
            logger.warning("watching %s failed (%s: %s); again in %.0f s", kind.plural, type(error).__name__, error,
                           RESTART_DELAY)
        await asyncio.sleep(RESTART_DELAY)


async def _follow_pause() -> None:
    """For the life of the operator: once this replica is not paused after a pass was put off (``put_off``), every
    kind passes over its objects (``Followed.on_resume``). Led by the put-off passes, not by watching the pause come
    and go: a pause too short to be seen here still leaves no pass undone."""
    await FOLLOWED.pause_found.wait()
    pause = FOLLOWED.pause
    while pause is not None:
        await FOLLOWED.deferred.wait()
        logger.info("passes wait while this replica is paused (peering: another replica is active, or not decided "
                    "yet); its streams go on")
        await pause.wait_for(False)
        if FOLLOWED.leaving:  # shutting down: nothing more to resume
            return
        FOLLOWED.deferred.clear()
        logger.info("resumed: every object gets a pass")
        for callback in FOLLOWED.resumed:
            try:
                callback()
            except Exception as error:  # the other kinds must still be taken over
                logger.error("resuming failed (%s)\n%s", type(error).__name__,
                             "".join(traceback.format_tb(error.__traceback__)))


async def _stream(kind: Kind, namespace: str | None, settings: kopf.OperatorSettings) -> None:
    listeners = FOLLOWED.listeners[kind]
    listing: set[str] | None = None  # the uids of the listing under way
    posting_set = False
    # Never paused (operator_paused=None): a standby's stores stay current, and a takeover lists nothing.
    async for event in watching.infinite_watch(settings=settings, resource=kind.resource(),
                                               namespace=references.NamespaceName(namespace) if namespace else None,
                                               operator_paused=None):
        if not posting_set and FOLLOWED.posting is not None:  # in this task's context: its wake-ups inherit it
            posting.event_queue_loop_var.set(FOLLOWED.posting[0])
            posting.event_queue_var.set(FOLLOWED.posting[1])
            posting_set = True
        if isinstance(event, watching.Bookmark):
            found, listing = listing or set(), None
            where = f" in {namespace}" if namespace else ""
            since = FOLLOWED.streaming_since.get((kind.plural, namespace))
            logger.info("listed %d %s%s%s%s", len(found), kind.plural, where,
                        "" if FOLLOWED.listed.is_set() else " (start-up)",
                        "" if since is None else f" in {time.monotonic() - since:.1f} s")
            for listener in listeners:
                try:
                    listener.relisted(namespace, found)
                except Exception as error:  # the gate must open all the same: every other Sandbox waits for it
                    logger.error("%s%s: listing not handled (%s)\n%s", kind.plural, where, type(error).__name__,
                                 "".join(traceback.format_tb(error.__traceback__)))
            FOLLOWED.pending.discard((kind, namespace))
            FOLLOWED.check_others_listed()
            FOLLOWED.unlisted.discard((kind, namespace))
            if not any(unlisted == kind for unlisted, _ in FOLLOWED.unlisted):
                _current(kind).set()
                FOLLOWED.overdue.discard(kind)
            if not FOLLOWED.pending and not FOLLOWED.listed.is_set():
                logger.info("every watched kind is listed: the Sandboxes' passes go on")
                FOLLOWED.listed.set()
            continue
        kind_of_event, body = event["type"], event["object"]
        if kind_of_event == "BOOKMARK":
            continue
        if kind_of_event is None:
            listing = set() if listing is None else listing
            listing.add(str((body.get("metadata") or {}).get("uid", "")))
        for listener in listeners:
            try:
                if listener.wants(body):
                    listener.changed(kind_of_event, body)
            except Exception as error:  # one object nobody foresaw must not stop every other object's events
                meta = body.get("metadata") or {}
                logger.error("%s %s/%s: event not handled (%s)", kind.plural, meta.get("namespace"), meta.get("name"),
                             type(error).__name__)
