"""What bench/fleet.py measures the cluster and its controllers with: raw API calls, /proc figures, idle detection,
extra kwok nodes, namespaces that are gone when they are deleted, and the API server's write counters."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config

WriteKey = tuple[str, str, str]  # (verb, resource, subresource) as apiserver_request_total labels them
# Not the controllers' doing: lease renewals (leader election, node heartbeats) and node status heartbeats.
EXCLUDED_WRITES = {("leases", ""), ("nodes", "status")}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class RawApi:
    """Plain HTTP to the API server with the kubeconfig's credentials: JSON in and out, no client models."""

    def __init__(self, kubeconfig: Path | str, pool_size: int = 32) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        api_client = client.ApiClient(configuration)
        self.host = configuration.host
        self.pool: urllib3.PoolManager = api_client.rest_client.pool_manager
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        token = configuration.api_key.get("authorization")
        if token:
            self.headers["Authorization"] = token

    def _url(self, path: str, query: dict[str, str]) -> str:
        return f"{self.host}{path}" + (f"?{urlencode(query)}" if query else "")

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                **query: str) -> tuple[int, bytes]:
        """One request; the status and the body as bytes."""
        response = self.pool.request(
            method, self._url(path, query), body=None if body is None else json.dumps(body),
            headers={**self.headers, "Content-Type": content_type}, timeout=urllib3.Timeout(connect=10, read=120),
        )
        return response.status, response.data

    def get_json(self, path: str, **query: str) -> dict[str, Any]:
        """GET a path; raise on anything but 200."""
        status, data = self.request("GET", path, **query)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {data[:300]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    def create(self, path: str, body: dict[str, Any]) -> None:
        """POST an object to a collection; raise unless it was created."""
        status, data = self.request("POST", path, body)
        if status != 201:
            raise RuntimeError(f"POST {path}: HTTP {status}: {data[:300]!r}")

    def stream(self, path: str, **query: str) -> urllib3.BaseHTTPResponse:
        """A GET whose body is read as it arrives (watches)."""
        return self.pool.request("GET", self._url(path, query), headers=self.headers, preload_content=False,
                                 timeout=urllib3.Timeout(connect=10, read=None))


def create_all(api: RawApi, path: str, bodies: Iterable[dict[str, Any]], workers: int,
               rate: float = 0) -> dict[str, float]:
    """Create the objects from ``workers`` threads, at most ``rate`` a second if given (the n-th not before n / rate
    seconds); return each name's submit time (just before its POST)."""
    submitted: dict[str, float] = {}
    start = time.monotonic()

    def one(index: int, body: dict[str, Any]) -> None:
        if rate:
            time.sleep(max(0.0, start + index / rate - time.monotonic()))
        submitted[body["metadata"]["name"]] = time.monotonic()
        api.create(path, body)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(one, index, body) for index, body in enumerate(bodies)]:
            future.result()
    return submitted


# --- one controller process, from /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5), after pid and comm


def cluster_pids(cluster: Any) -> dict[str, int]:
    """The local cluster's processes (API server, etcd, scheduler, controller manager, kwok) by name, read once from
    its state file; empty for an external cluster, whose processes are not here to read."""
    plane = getattr(cluster, "control_plane", None)
    if plane is None:
        return {}
    return {name: int(process["pid"]) for name, process in plane.status().get("processes", {}).items()}


class CpuWindow:
    """CPU-seconds each process spends over a window, less what it spent idle over as long just before (node
    heartbeats, leases): ``CpuWindow(pids)`` reads the idle rate for ``idle_seconds``, then the window starts;
    ``spent()`` ends it. Reads /proc only; a process gone meanwhile is left out."""

    def __init__(self, pids: dict[str, int], idle_seconds: float = 2.0) -> None:
        self.pids = pids
        start, started = self._read(), time.monotonic()
        time.sleep(idle_seconds)
        self.before, self.started = self._read(), time.monotonic()
        self.idle = {name: (self.before[name] - start[name]) / (self.started - started)
                     for name in self.before if name in start}

    def _read(self) -> dict[str, float]:
        found = {}
        for name, pid in self.pids.items():
            try:
                found[name] = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue
        return found

    def spent(self) -> dict[str, float]:
        """CPU-seconds each process spent since the window started, less its idle rate over the window."""
        now, took = self._read(), time.monotonic() - self.started
        return {name: now[name] - self.before[name] - self.idle.get(name, 0.0) * took
                for name in now if name in self.before}


def rss_mib(pid: int) -> float:
    """VmRSS of the process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_idle(pid: int, timeout: float, window: float = 2.0, threshold: float = 0.02) -> float | None:
    """Wait until the process used under ``threshold`` of one CPU over ``window`` seconds; return the monotonic time
    that quiet window began, or None if it never came within ``timeout``."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        samples.append((now, cpu_seconds(pid)))
        start = next((s for s in reversed(samples) if now - s[0] >= window), None)
        if start is not None and samples[-1][1] - start[1] < threshold * (now - start[0]):
            return start[0]
        time.sleep(0.2)
    return None


# --- the API server's write counters ---------------------------------------------------------------------------------


def controller_writes(delta: Counter[WriteKey]) -> Counter[WriteKey]:
    """The write counters without leases and node heartbeats."""
    return Counter({key: value for key, value in delta.items() if (key[1], key[2]) not in EXCLUDED_WRITES and value})


def write_label(key: WriteKey) -> str:
    verb, resource, subresource = key
    return f"{verb} {resource}{'/' + subresource if subresource else ''}"


# --- kwok nodes and namespaces ----------------------------------------------------------------------------------------


def wait_nodes_ready(api: RawApi, names: Iterable[str], timeout: float) -> set[str]:
    """Wait until kwok reports the nodes Ready; return those that are not."""
    missing = set(names)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        for name in sorted(missing):
            status, data = api.request("GET", f"/api/v1/nodes/{name}")
            conditions = (json.loads(data).get("status") or {}).get("conditions") or [] if status == 200 else []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                missing.discard(name)
        time.sleep(0.5)
    return missing


def create_namespace(api: RawApi, name: str, labels: dict[str, str]) -> None:
    """Create a namespace and wait for its default ServiceAccount (pods are refused until it exists)."""
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": name, "labels": labels}})
    deadline = time.monotonic() + 30
    while api.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name} got no default ServiceAccount in 30s")
        time.sleep(0.1)


def delete_and_wait(api: RawApi, path: str, timeout: float) -> bool:
    """Delete an object (background propagation) and wait until it is gone; False if it is still there."""
    api.request("DELETE", path, {"propagationPolicy": "Background"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.request("GET", path)[0] == 404:
            return True
        time.sleep(0.5)
    return False


def events_by_source(api: RawApi, namespace: str, skip: str) -> Counter[str]:
    """Events in a namespace by the component that reported them, without those about objects named ``*skip*``."""
    counts: Counter[str] = Counter()
    for event in api.get_json(f"/api/v1/namespaces/{namespace}/events")["items"]:
        if skip in (event.get("involvedObject") or {}).get("name", ""):
            continue
        source = event.get("reportingComponent") or (event.get("source") or {}).get("component") or "?"
        counts[source] += int(event.get("count") or 1)
    return counts


def foreign_controllers(own: Iterable[int]) -> list[str]:
    """Other sandbox controllers running on this machine (their work would show in our figures)."""
    mine = set(own)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(part.decode(errors="replace") for part in argv if part)
        if "-m sandbox_operator" in text or "agent-sandbox-controller" in Path(argv[0].decode(errors="replace")).name:
            found.append(f"pid {entry.name}: {text[:120]}")
    return found
