"""pytest fixtures for the loopback API server (registered from tests/conftest.py).

- ``k8s_emu``: a started :class:`K8sEmu` (sim kubelet, no KubeRay), function-scoped.
- ``k8s_emu_kuberay``: the same with ``kuberay=True``.
- ``k8s_emu_factory``: ``k8s_emu_factory(**kwargs) -> K8sEmu`` (started; stopped at teardown).
- ``k8s_emu_client``: a kubernetes_asyncio ``ApiClient`` for ``k8s_emu`` (admin token).
- ``k8s_emu_session`` / ``k8s_emu_kuberay_session``: session-scoped instances (for code that
  caches its client configuration, such as kubespawner's ``load_config``). Call
  ``emu.faults.clear()`` and ``emu.reset_request_log()`` yourself when you share them.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from . import K8sEmu


@pytest.fixture
def k8s_emu_factory() -> Iterator[Callable[..., K8sEmu]]:
    made: list[K8sEmu] = []

    def make(**kwargs: Any) -> K8sEmu:
        emu = K8sEmu(**kwargs).start()
        made.append(emu)
        return emu

    yield make
    for emu in reversed(made):
        emu.stop()


@pytest.fixture
def k8s_emu() -> Iterator[K8sEmu]:
    with K8sEmu() as emu:
        yield emu


@pytest.fixture
def k8s_emu_kuberay() -> Iterator[K8sEmu]:
    with K8sEmu(kuberay=True) as emu:
        yield emu


@pytest.fixture(scope="session")
def k8s_emu_session() -> Iterator[K8sEmu]:
    with K8sEmu() as emu:
        yield emu


@pytest.fixture(scope="session")
def k8s_emu_kuberay_session() -> Iterator[K8sEmu]:
    with K8sEmu(kuberay=True) as emu:
        yield emu


@pytest.fixture
async def k8s_emu_client(k8s_emu: K8sEmu) -> AsyncIterator[Any]:
    """A ``kubernetes_asyncio.client.ApiClient`` for ``k8s_emu`` (admin token), closed afterwards."""
    from kubernetes_asyncio import config

    api = await config.new_client_from_config(config_file=str(k8s_emu.kubeconfig_path))
    try:
        yield api
    finally:
        await api.close()
