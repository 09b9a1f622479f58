"""The committed configuration reference is current, and every setting has help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from traitlets import Int

from rayspawner import docs
from rayspawner.config import RayConfig

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "configuration.md"


def test_committed_reference_is_not_stale() -> None:
    assert REFERENCE.is_file(), (
        "docs/configuration.md is missing: run `python -m rayspawner config-reference --output docs/configuration.md`"
    )
    assert REFERENCE.read_text() == docs.render(), (
        "docs/configuration.md is stale: run `python -m rayspawner config-reference --output docs/configuration.md`"
    )


def test_every_configurable_trait_has_help() -> None:
    assert docs.missing_help() == [], f"configurable traits without a help text: {docs.missing_help()}"


def test_every_ray_trait_is_in_the_reference() -> None:
    text = docs.render()
    names = [n for n, t in RayConfig.class_traits(config=True).items() if n.startswith("ray_")]
    assert len(names) > 20
    for name in names:
        assert f"### `{name}`" in text, name
        assert f"[`{name}`](#{name})" in text, name
    try:
        from rayspawner.local_spawner import LocalRaySpawner
    except ImportError:
        return
    for name in docs.own_config_traits(LocalRaySpawner):
        assert f"### `{name}`" in text, f"LocalRaySpawner.{name} missing from the reference"


def test_reference_shows_type_default_and_help() -> None:
    text = docs.render()
    section = text.split("### `ray_backend`", 1)[1].split("### ", 1)[0]
    assert 'one of "auto", "pods", "kuberay"' in section
    assert 'Default: `"auto"`' in section
    assert "KubeRay when the API server serves" in section
    assert "| [`ray_worker_replicas`](#ray_worker_replicas) | int \\| float \\| str | `1` |" in text


def test_missing_help_is_detected(monkeypatch) -> None:
    class Broken(RayConfig):
        ray_undocumented = Int(3, config=True)

    monkeypatch.setattr(docs, "documented_classes", lambda: [("x", Broken, docs.own_config_traits(Broken))])
    assert docs.missing_help() == ["Broken.ray_undocumented"]


def test_cli_check_and_print(tmp_path: Path, capsys) -> None:
    from rayspawner.__main__ import main

    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    # the installed command itself once (a stale file fails it), then the same CLI in-process
    r = subprocess.run(
        [sys.executable, "-m", "rayspawner", "config-reference", "--check", str(stale)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 1 and "stale" in r.stderr
    capsys.readouterr()
    assert main(["config-reference", "--output", str(stale)]) == 0
    assert main(["config-reference", "--check", str(stale)]) == 0
    capsys.readouterr()
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == stale.read_text()
