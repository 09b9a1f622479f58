"""Shared pytest configuration."""

pytest_plugins = ["tests.k8semu.fixtures", "tests.spawner_fixtures", "tests.local_hub"]
