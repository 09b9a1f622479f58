"""Shared pytest configuration."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.k8semu.fixtures", "tests.spawner_fixtures", "tests.local_hub"]

#: modules whose slow tests boot real Ray clusters. Under pytest-xdist (``--dist loadgroup``)
#: they share one worker, so two Ray clusters never boot at once on a 2-core machine (Ray's
#: fixed start-up windows are missed under contention); the other slow tests (hubs, API faults)
#: run beside them on the other workers, at a lower CPU priority (see pytest_runtest_setup).
REAL_RAY_MODULES = {
    "test_browser",
    "test_cost_activity",
    "test_cost_culler",
    "test_cost_quotas_hub",
    "test_dashboard_proxy",
    "test_e2e_kubernetes",
    "test_e2e_local",
    "test_local_backend",
    "test_local_demo",
}


#: quick modules whose cases each run a whole spawn+stop under injected API faults with tight
#: retry bounds: one worker runs them one after another, so they never load the machine together
#: (four at once once pushed a stop past its bound)
SERIAL_QUICK_MODULES = {"test_reliability_faults"}


#: real-Ray modules run last in their group, in this order: the tests beside the group (nice 10)
#: are done by then, and these boot the most Ray nodes at once (four pods in parallel)
RAY_LAST = ("test_local_backend", "test_e2e_kubernetes")


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: RAY_LAST.index(_module(item)) + 1 if _module(item) in RAY_LAST else 0)
    for item in items:
        module = _module(item)
        if module in REAL_RAY_MODULES and item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("real-ray"))
        elif module in SERIAL_QUICK_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


#: CPU priority (nice) of tests that run beside the real-Ray group under xdist
BESIDE_RAY_NICE = 10


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, a test outside the real-Ray group (and what it starts: hubs, emulators)
    runs at nice 10, a real-Ray test at nice 0: the slow hub tests use the CPU that Ray's
    boots leave over instead of making them miss their fixed start-up windows. Set before
    the test's fixtures, so module-scoped hubs inherit it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    group = item.get_closest_marker("xdist_group")
    wanted = 0 if group is not None and group.args and group.args[0] == "real-ray" else BESIDE_RAY_NICE
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) != wanted:
            os.setpriority(os.PRIO_PROCESS, 0, wanted)
    except (PermissionError, OSError):
        pass  # raising it back needs root; then the test runs at whatever it has
