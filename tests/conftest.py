"""Shared fixtures: a handle to a real cluster for tests marked ``cluster`` or ``node``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from localcluster.handle import Cluster, connect
from localcluster.operator_process import OperatorProcess, install_crds


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster under test: SANDBOX_OPERATOR_TEST_KUBECONFIG, the running local one, or a new local one."""
    handle = connect(start=True)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def api(cluster: Cluster) -> client.ApiClient:
    """An admin API client for the cluster under test."""
    return cluster.api_client()


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """The project's CRDs, installed once per session."""
    install_crds(cluster)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One running operator for the session; tests that stop it must start it again."""
    process = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
