"""Ray and Python versions agree everywhere, and the Containerfiles parse.

The one source is ``rayspawner/versions.py``. Checked against it: the
Containerfiles' build-argument defaults and pinned installs, the ``pyproject.toml``
extras, image tags and version mentions under ``jupyterhub_config/``, ``images/``
and ``docs/``, and README.md (when present). No container engine exists here,
so the Containerfiles are parsed, not built (see images/README.md).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rayspawner.versions import PYTHON_VERSION, RAY_VERSION, SLOW_IMPORT_DISTRIBUTIONS

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
CONTAINERFILES = sorted(IMAGES.glob("*/Containerfile"))

KNOWN = {
    "FROM",
    "ARG",
    "ENV",
    "LABEL",
    "RUN",
    "COPY",
    "ADD",
    "WORKDIR",
    "EXPOSE",
    "USER",
    "CMD",
    "ENTRYPOINT",
    "VOLUME",
    "SHELL",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "ONBUILD",
}


# ----------------------------------------------------------------- the parser
@dataclass
class Containerfile:
    instructions: list[tuple[int, str, str]] = field(default_factory=list)  # (line, INSTR, args)
    global_args: dict[str, str] = field(default_factory=dict)  # ARGs before the first FROM
    stage_args: dict[str, str] = field(default_factory=dict)  # ARGs after it (last stage)
    errors: list[str] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)  # pip package (lower-case, no extras) -> version

    def expand(self, text: str, scope: dict[str, str]) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: scope.get(m.group(1) or m.group(2), m.group(0)), text)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as buildah does
        if not buf:
            start = no
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append((start, buf + stripped))
        buf = ""
    if buf:
        lines.append((start, buf))
    return lines


def _parse_arg(args: str) -> tuple[str, str | None]:
    name, _, default = args.partition("=")
    return name.strip(), (default.strip().strip('"') if _ else None)


def _pip_requirements(command: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` in a shell command."""
    found = []
    for segment in re.split(r"&&|;|\|\|", command):
        try:
            words = shlex.split(segment)
        except ValueError:
            words = segment.split()
        for i, w in enumerate(words):
            if (
                (w.endswith("pip") or w.endswith("pip3") or re.fullmatch(r"pip3?(\.\d+)?", w.rsplit("/", 1)[-1]))
                and i + 1 < len(words)
                and words[i + 1] == "install"
            ):
                found.append(words[i + 2 :])
            elif w == "-m" and i + 2 < len(words) and words[i + 1] == "pip" and words[i + 2] == "install":
                found.append(words[i + 3 :])
    return found


def parse_containerfile(text: str) -> Containerfile:
    cf = Containerfile()
    seen_from = False
    for no, line in _logical_lines(text):
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        args = args.strip()
        if instr not in KNOWN:
            cf.errors.append(f"line {no}: unknown instruction {instr!r}")
            continue
        cf.instructions.append((no, instr, args))
        if instr == "ARG":
            name, default = _parse_arg(args)
            (cf.stage_args if seen_from else cf.global_args)[name] = default or ""
        elif instr == "FROM":
            image = args.split()[0] if args else ""
            for var in re.findall(r"\$\{(\w+)\}|\$(\w+)", image):
                var = var[0] or var[1]
                if var not in cf.global_args:
                    cf.errors.append(f"line {no}: FROM uses ${{{var}}}, which no ARG before FROM declares")
            if not image:
                cf.errors.append(f"line {no}: FROM without an image")
            seen_from = True
            cf.stage_args = {}
        elif not seen_from:
            cf.errors.append(f"line {no}: {instr} before the first FROM (only ARG may come first)")
        elif instr == "RUN":
            scope = {**cf.global_args, **cf.stage_args}
            for reqs in _pip_requirements(args):
                _check_pins(cf, no, [cf.expand(r, scope) for r in reqs])
    if not seen_from:
        cf.errors.append("no FROM instruction")
    users = [(no, args) for no, instr, args in cf.instructions if instr == "USER"]
    if not users:
        cf.errors.append("no USER instruction: the image would run as root")
    else:
        no, user = users[-1]
        uid = user.split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            cf.errors.append(f"line {no}: the last USER must be a numeric non-root UID (OpenShift), not {user!r}")
        last_run = max((n for n, i, _ in cf.instructions if i in ("RUN", "COPY", "ADD")), default=0)
        if last_run > no:
            cf.errors.append(f"line {last_run}: RUN/COPY/ADD after the last USER (it must come last)")
    return cf


def _check_pins(cf: Containerfile, no: int, reqs: list[str]) -> None:
    skip_next = False
    no_deps = "--no-deps" in reqs
    for r in reqs:
        if skip_next:
            skip_next = False
            continue
        if r in ("-r", "-c", "--requirement", "--constraint", "-e", "--editable"):
            cf.errors.append(f"line {no}: pip install {r} is not allowed here (pin each package with ==)")
            skip_next = True
            continue
        if r in ("-i", "--index-url", "--extra-index-url", "--target", "--prefix"):
            skip_next = True
            continue
        if r.startswith("-"):
            continue
        if r.startswith(("/", "./", "../")):
            if not no_deps:
                cf.errors.append(f"line {no}: local install {r} without --no-deps pulls unpinned dependencies")
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[A-Za-z0-9,._-]+\])?==([A-Za-z0-9.+!-]+)", r)
        if not m or "$" in r:
            cf.errors.append(f"line {no}: pip install {r!r} is not pinned with == to a version")
            continue
        cf.pins[m.group(1).lower().replace("_", "-")] = m.group(3)


def _load(path: Path) -> Containerfile:
    return parse_containerfile(path.read_text())


# ------------------------------------------------------------------ the tests
def test_there_are_containerfiles() -> None:
    names = {p.parent.name for p in CONTAINERFILES}
    assert {"notebook", "ray"} <= names, f"missing Containerfiles under images/: found {sorted(names)}"


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_containerfile_parses(path: Path) -> None:
    cf = _load(path)
    assert not cf.errors, f"{path.relative_to(ROOT)}:\n" + "\n".join(cf.errors)


@pytest.mark.parametrize("name", ["notebook", "ray"])
def test_ray_images_use_the_pinned_versions(name: str) -> None:
    cf = _load(IMAGES / name / "Containerfile")
    args = {**cf.global_args, **cf.stage_args}
    where = f"images/{name}/Containerfile"
    assert args.get("RAY_VERSION") == RAY_VERSION, (
        f"{where}: ARG RAY_VERSION={args.get('RAY_VERSION')} but versions.py has {RAY_VERSION}"
    )
    assert args.get("PYTHON_VERSION") == PYTHON_VERSION, (
        f"{where}: ARG PYTHON_VERSION={args.get('PYTHON_VERSION')} but versions.py has {PYTHON_VERSION}"
    )
    assert cf.pins.get("ray") == RAY_VERSION, (
        f"{where}: installs ray {cf.pins.get('ray')}, versions.py has {RAY_VERSION}"
    )
    from_line = next(a for _, i, a in cf.instructions if i == "FROM")
    assert "ubi9" in cf.expand(from_line, cf.global_args), f"{where}: not based on Red Hat UBI 9: {from_line}"


def test_notebook_image_has_the_notebook_stack_pinned() -> None:
    cf = _load(IMAGES / "notebook" / "Containerfile")
    for pkg in ("ray", "jupyterhub", "jupyterlab", "jupyter-server-proxy", "jupyter-server", "ipykernel"):
        assert pkg in cf.pins, f"images/notebook/Containerfile does not pin {pkg}"
    from importlib.metadata import version

    # the hub side (and local mode) runs the same jupyterhub / jupyter-server-proxy as the image
    assert cf.pins["jupyter-server-proxy"] == version("jupyter-server-proxy")


def _uninstalled_after_install(cf: Containerfile) -> set[str]:
    """Distributions a RUN removes with ``pip uninstall`` after that RUN's ``pip install``."""
    gone: set[str] = set()
    for _, instr, args in cf.instructions:
        if instr == "RUN" and _pip_requirements(args):
            for m in re.finditer(r"pip3?\s+uninstall\s+((?:-\S+\s+)*)([\w.\- ]+)", args.split("install", 1)[1]):
                gone.update(m.group(2).split())
    return gone


def test_images_with_jupyter_drop_what_slows_every_ray_start() -> None:
    """The default cluster runs on the notebook image: each of its Ray nodes starts ~8 Python
    processes, each paying rfc3987-syntax's import (SLOW_IMPORT_DISTRIBUTIONS)."""
    for path in CONTAINERFILES:
        cf = _load(path)
        if "jupyter-server" in cf.pins or "jupyterlab" in cf.pins:
            missing = set(SLOW_IMPORT_DISTRIBUTIONS) - _uninstalled_after_install(cf)
            assert not missing, f"{path.relative_to(ROOT)} keeps {sorted(missing)} (pip uninstall after the install)"
    # and this environment, made by the README's commands (scripts/install.sh), has none of them
    import importlib.util

    assert not [m for m in SLOW_IMPORT_DISTRIBUTIONS.values() if importlib.util.find_spec(m)]


def test_slow_import_hint_names_the_package_only_where_it_is_installed(tmp_path: Path, monkeypatch) -> None:
    from rayspawner.local_spawner import slow_import_hint

    assert slow_import_hint() is None
    (tmp_path / "rfc3987_syntax").mkdir()
    (tmp_path / "rfc3987_syntax" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    hint = slow_import_hint()
    assert hint and "pip uninstall rfc3987-syntax" in hint and "Ray" in hint


def test_pyproject_extras_pin_the_same_ray() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    ray_reqs = [r for r in reqs if re.match(r"ray(\[|=|\s|$|<|>)", r)]
    assert ray_reqs, "pyproject.toml: no extra pins Ray"
    for r in ray_reqs:
        m = re.search(r"==\s*([0-9][^,;\s]*)", r)
        assert m and m.group(1) == RAY_VERSION, f"pyproject.toml: {r!r} does not pin ray=={RAY_VERSION}"
    spec = project.get("requires-python", "")
    m = re.search(r">=\s*3\.(\d+)", spec)
    assert m and int(m.group(1)) <= int(PYTHON_VERSION.split(".")[1]), (
        f"pyproject.toml requires-python {spec!r} excludes Python {PYTHON_VERSION}"
    )


#: the Ray libraries notebook users run first (driver mode makes them work from a bare ray.init())
RAY_LIBRARIES = {"data", "train", "tune"}


def ray_extras(text: str) -> list[set[str]]:
    """The extras of every ``ray[...]`` requirement in a file."""
    return [set(m.group(1).split(",")) for m in re.finditer(r"\bray\[([a-z,]+)\]\s*==", text)]


def test_images_and_local_extra_ship_the_same_ray_libraries() -> None:
    """A driver and the workers it uses import the same libraries: the notebook image, the Ray
    image and local mode all install ray with Data, Train and Tune, not just ray[default]."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    local = " ".join(project["optional-dependencies"]["local"])
    found = {
        "pyproject local extra": ray_extras(local),
        "notebook image": ray_extras((IMAGES / "notebook" / "Containerfile").read_text()),
        "ray image": ray_extras((IMAGES / "ray" / "Containerfile").read_text()),
    }
    for where, extras in found.items():
        assert len(extras) == 1, f"{where}: expected one pinned ray[...] requirement, found {extras}"
        assert RAY_LIBRARIES <= extras[0], f"{where}: ray{sorted(extras[0])} lacks {sorted(RAY_LIBRARIES - extras[0])}"
    assert len({frozenset(e[0]) for e in found.values()}) == 1, found
    assert ray_extras('pip install "ray[default]==2.60.0"') == [{"default"}]


# Version mentions in prose and config: (regex, what, group -> normalised version)
RAY_PATTERNS = [
    re.compile(r"\bray(?:\[[a-z,]+\])?==([0-9][0-9a-z.]*[0-9a-z])", re.I),
    re.compile(r"\bRay (\d+\.\d+\.\d+)\b"),
    re.compile(r"RAY_VERSION\s*=\s*\"?(\d+\.\d+\.\d+)"),
    re.compile(r"rayVersion:\s*\"?(\d+\.\d+\.\d+)"),
    re.compile(r"[/-](?:ray|notebook)(?:-node)?:(\d+\.\d+\.\d+)(?:-py\d+)?\b"),
]
PYTHON_PATTERNS = [
    re.compile(r":\d+\.\d+\.\d+-py(\d)(\d+)\b"),
    re.compile(r"\bpython-(\d)(\d{2})\b"),
    re.compile(r"PYTHON_VERSION\s*=\s*\"?(\d)\.(\d+)"),
    re.compile(r"\bPython (\d)\.(\d+)\b(?!\+|\.\d)(?! or (?:newer|later))"),
]


def _text_files() -> list[Path]:
    files = [
        p
        for p in (ROOT / "jupyterhub_config").rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".yml", ".py", ".md", ".json")
    ]
    files += [p for p in (ROOT / "docs").rglob("*.md")] if (ROOT / "docs").is_dir() else []
    files += [p for p in IMAGES.rglob("*") if p.is_file()]
    readme = ROOT / "README.md"
    if readme.is_file():
        files.append(readme)
    return sorted(set(files))


def find_mismatches(text: str) -> list[str]:
    bad = []
    for no, line in enumerate(text.splitlines(), 1):
        if "version-check: ignore" in line:
            continue
        for pat in RAY_PATTERNS:
            for m in pat.finditer(line):
                if m.group(1) != RAY_VERSION:
                    bad.append(f"line {no}: Ray {m.group(1)} (versions.py: {RAY_VERSION}): {line.strip()[:120]}")
        for pat in PYTHON_PATTERNS:
            for m in pat.finditer(line):
                found = f"{m.group(1)}.{m.group(2)}"
                if found != PYTHON_VERSION:
                    bad.append(f"line {no}: Python {found} (versions.py: {PYTHON_VERSION}): {line.strip()[:120]}")
    return bad


def test_docs_configs_and_images_name_the_same_versions() -> None:
    problems = []
    files = _text_files()
    assert any("jupyterhub_config" in str(p) for p in files), "no files under jupyterhub_config/"
    for path in files:
        for problem in find_mismatches(path.read_text(errors="replace")):
            problems.append(f"{path.relative_to(ROOT)} {problem}")
    assert not problems, "Ray/Python versions disagree with rayspawner/versions.py:\n" + "\n".join(problems)


def test_configs_mention_the_pinned_versions() -> None:
    """At least the shipped deploy configs carry image tags with the pinned versions."""
    tag = f":{RAY_VERSION}-py{PYTHON_VERSION.replace('.', '')}"
    with_tag = [p for p in _text_files() if "jupyterhub_config" in str(p) and tag in p.read_text()]
    assert with_tag, f"no file under jupyterhub_config/ uses an image tagged {tag}"


# --------------------------------------------------- the checker itself works
def test_checker_catches_disagreements() -> None:
    assert find_mismatches("image: quay.io/x/rayspawner-ray:2.9.0-py311")
    assert find_mismatches("image: quay.io/x/rayspawner-notebook:2.60.0-py310")
    assert find_mismatches('pip install "ray[default]==2.59.1"')
    assert find_mismatches("Tested with Ray 2.41.0 and Python 3.12.")
    assert not find_mismatches(f"Tested with Ray {RAY_VERSION} and Python {PYTHON_VERSION}; Python 3.10+ for the hub.")
    assert not find_mismatches("Ray >= 2.52 supports token auth")


def test_parser_catches_bad_containerfiles() -> None:
    bad = parse_containerfile(
        "RUN echo hi\n"
        "FROM ${BASE}\n"
        "FRM typo\n"
        "RUN pip install ray jupyterlab>=4 && python -m pip install -r req.txt\n"
        "RUN pip install /src\n"
        "USER root\n"
    )
    text = "\n".join(bad.errors)
    for expected in (
        "before the first FROM",
        "no ARG before FROM",
        "unknown instruction 'FRM'",
        "'ray' is not pinned",
        "'jupyterlab>=4' is not pinned",
        "-r is not allowed",
        "without --no-deps",
        "numeric non-root UID",
    ):
        assert expected in text, f"{expected!r} not reported in:\n{text}"
    good = parse_containerfile(
        "ARG BASE=ubi9\nFROM ${BASE}\nARG V=1.0\n"
        'RUN /opt/bin/pip install --no-cache-dir "ray[default]==${V}" \\\n  x==2 \\\n'
        "# comment\n  && echo ok\nUSER 1001\n"
    )
    assert not good.errors, good.errors
    assert good.pins == {"ray": "1.0", "x": "2"}
    assert parse_containerfile("FROM a\nRUN true\nUSER 1001\nRUN id\n").errors
