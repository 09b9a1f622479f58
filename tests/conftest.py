"""Shared pytest configuration."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.k8semu.fixtures", "tests.spawner_fixtures", "tests.local_hub"]

#: modules whose slow tests boot real Ray clusters. Under pytest-xdist (``--dist loadgroup``)
#: they share one worker, so two Ray clusters never boot at once on a 2-core machine (Ray's
#: fixed start-up windows are missed under contention); the other slow tests (hubs, API faults)
#: run beside them on the other workers.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        if module in REAL_RAY_MODULES and item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("real-ray"))
        elif module in SERIAL_QUICK_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))
