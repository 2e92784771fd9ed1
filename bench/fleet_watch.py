"""A raw watch of one collection in a process of its own, for bench/fleet.py: arrival times of Ready and DELETED.

    .venv/bin/python bench/fleet_watch.py --kubeconfig K --path /apis/g/v/namespaces/ns/sandboxes

The child prints one JSON line per first Ready (condition Ready True) and per DELETED event, stamped on arrival with
``time.monotonic()`` (system-wide on Linux, so comparable with the parent's) and ``time.time()``. It parses each event
as plain JSON, never into client models, and runs apart from the process creating objects, so the creator's work
does not delay the stamps. ``ReadyWatch`` starts the child and collects its lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_cluster import RawApi


@dataclass(frozen=True)
class Arrival:
    """When a watch event reached the watcher, and the server's own timestamps on the object."""

    mono: float
    wall: float
    created: str  # metadata.creationTimestamp (seconds)
    stamp: str  # Ready: the condition's lastTransitionTime; DELETED: the object's status.expiresAt, if any


def _ready_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return dict(condition)
    return None


def _emit(kind: str, obj: dict[str, Any], stamp: str) -> None:
    meta = obj.get("metadata") or {}
    line = {"kind": kind, "name": meta.get("name"), "mono": time.monotonic(), "wall": time.time(),
            "created": meta.get("creationTimestamp", ""), "stamp": stamp}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def watch_events(response: Any) -> Iterator[dict[str, Any]]:
    """The events of a watch response, parsed as plain JSON, each as soon as its line is complete."""
    buffer = b""
    for chunk in response.stream(65536, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def run_watch(kubeconfig: str, path: str) -> None:
    """List once for a resourceVersion, then watch from it (again after the server closes the stream)."""
    api = RawApi(kubeconfig)
    version = api.get_json(path, limit="1")["metadata"]["resourceVersion"]
    ready: set[str] = set()
    announced = False
    while True:
        response = api.stream(path, watch="true", resourceVersion=version, allowWatchBookmarks="true",
                              timeoutSeconds="3600")
        if response.status != 200:
            raise SystemExit(f"watch {path}: HTTP {response.status}: {response.read()[:300]!r}")
        if not announced:
            sys.stdout.write(json.dumps({"kind": "started"}) + "\n")
            sys.stdout.flush()
            announced = True
        for event in watch_events(response):
            obj = event["object"]
            if event["type"] == "ERROR":
                raise SystemExit(f"watch {path}: {obj.get('message')}")
            version = obj["metadata"]["resourceVersion"]
            if event["type"] == "BOOKMARK":
                continue
            name = obj["metadata"]["name"]
            if event["type"] == "DELETED":
                ready.discard(name)
                _emit("deleted", obj, (obj.get("status") or {}).get("expiresAt") or "")
            elif name not in ready and (condition := _ready_condition(obj)) is not None:
                ready.add(name)
                _emit("ready", obj, condition.get("lastTransitionTime", ""))


class ReadyWatch:
    """The watcher process and what it reported: first Ready and DELETED arrivals by object name."""

    def __init__(self, kubeconfig: Path, path: str) -> None:
        self.path = path
        self.ready: dict[str, Arrival] = {}
        self.deleted: dict[str, Arrival] = {}
        self._changed = threading.Condition()
        self._started = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--kubeconfig", str(kubeconfig), "--path", path],
            stdout=subprocess.PIPE, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._started.wait(30):
            self.close()
            raise RuntimeError(f"the watch on {path} did not start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = json.loads(raw)
            if line["kind"] == "started":
                self._started.set()
                continue
            arrival = Arrival(line["mono"], line["wall"], line["created"], line["stamp"])
            with self._changed:
                if line["kind"] == "ready":
                    self.ready.setdefault(line["name"], arrival)
                else:
                    self.deleted[line["name"]] = arrival
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait(self, seen: dict[str, Arrival], names: Iterable[str], deadline: float) -> set[str]:
        wanted = set(names)
        with self._changed:
            while True:
                missing = wanted - seen.keys()
                left = deadline - time.monotonic()
                if not missing or left <= 0 or self.process.poll() is not None:
                    return missing
                self._changed.wait(min(left, 1.0))

    def wait_ready(self, names: Iterable[str], timeout: float) -> set[str]:
        """Wait until every name was seen Ready; return those that were not."""
        return self._wait(self.ready, names, time.monotonic() + timeout)

    def wait_deleted(self, names: Iterable[str], timeout: float) -> set[str]:
        """Wait until every name was seen DELETED; return those that were not."""
        return self._wait(self.deleted, names, time.monotonic() + timeout)

    def close(self) -> None:
        """Stop the watcher process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--path", required=True, help="collection path, e.g. /api/v1/namespaces/ns/pods")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):  # stopped by the bench
        run_watch(arguments.kubeconfig, arguments.path)
