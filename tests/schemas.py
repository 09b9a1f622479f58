"""The real schemas in ``../shared/schemas`` (never copied in), each parsed once per test
process: the KubeRay CRD is 0.9 MB of YAML, several seconds a parse on a loaded machine, and
module-scoped fixtures are set up again whenever xdist interleaves modules on a worker.
Callers must not mutate what they get (copy first)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "schemas"
KUBERAY_CRD = "kuberay-v1.7.0-rayclusters.crd.yaml"
Z2JH_VALUES = "z2jh-values.schema.yaml"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def schema_path(name: str) -> Path:
    """The schema's path; skips the test where ``../shared/schemas`` is absent."""
    if not SCHEMAS.is_dir():
        pytest.skip(f"../shared/schemas is absent (not a project checkout): cannot validate against {name}")
    path = SCHEMAS / name
    assert path.is_file(), f"{path} missing from ../shared/schemas"
    return path


@functools.cache
def _parsed(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - CSafeLoader is the safe loader


def load_schema(name: str) -> Any:
    """The parsed schema document (shared: do not mutate)."""
    return _parsed(schema_path(name))
