"""Pod volumes on the process node, made as the kubelet makes them, through the API server.

Each volume is a directory of the pod, ``<pod dir>/volumes/<name>``, filled before any
container starts; a container sees only the volumes it mounts (``sandbox.py`` binds them).

- ``secret``, ``configMap``, ``downwardAPI`` and ``projected`` (with ``serviceAccountToken``:
  a TokenRequest bound to the pod, as the kubelet makes one; the admission plugin's
  ``kube-api-access-*`` volume is one of these): files with ``items``, ``defaultMode``/``mode``
  and ``optional``, mounted read-only.
- ``emptyDir``: a directory of the pod; ``medium: Memory`` is a tmpfs sized by ``sizeLimit``.
- ``persistentVolumeClaim``: the bound PersistentVolume's ``local`` or ``hostPath`` directory,
  so two pods mounting one claim share it and nothing else.
- ``hostPath``: the host's path.

A missing object leaves the pod's containers in ``ContainerCreating`` with the kubelet's
``FailedMount`` event (``MountVolume.SetUp failed for volume "x" : secret "y" not found``),
retried. Not done: refreshing a mounted Secret, ConfigMap or token after the pod started
(the kubelet rotates tokens at 80 % of their lifetime; tests run far shorter than an hour).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .containers import ConfigError, Container, expand, parse_quantity

if TYPE_CHECKING:
    from .podenv import PodEnv

log = logging.getLogger(__name__)

READ_ONLY_KINDS = ("secret", "configMap", "downwardAPI", "projected")


class VolumeError(Exception):
    """MountVolume.SetUp failed (the message is the kubelet's, after the volume name)."""


class PodVolumes:
    """The volumes of one pod (see the module docstring)."""

    def __init__(self, pod: PodEnv) -> None:
        self.pod = pod
        self.root = pod.dir / "volumes"
        self.specs: dict[str, dict[str, Any]] = {v["name"]: v for v in pod.spec.get("volumes") or []}
        self.paths: dict[str, Path] = {}
        self.tmpfs: list[Path] = []

    async def setup(self) -> None:
        """Make every volume not made yet; raises VolumeError for the first that fails."""
        for name, spec in self.specs.items():
            if name in self.paths:
                continue
            try:
                self.paths[name] = await self._make(name, spec)
            except (VolumeError, ConfigError) as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None

    async def _make(self, name: str, spec: dict[str, Any]) -> Path:
        kind = next((k for k in spec if k != "name"), "")
        path = self.root / name
        if kind == "persistentVolumeClaim":
            return await self._claim(spec[kind])
        if kind == "hostPath":
            host = Path(spec[kind]["path"])
            if spec[kind].get("type") == "DirectoryOrCreate":
                host.mkdir(parents=True, exist_ok=True)
            if not host.exists():
                raise VolumeError(f"hostPath type check failed: {host} does not exist")
            return host
        if kind not in ("emptyDir", *READ_ONLY_KINDS):
            raise VolumeError(f"volume type {kind!r} is not supported by the process node")
        path.mkdir(parents=True, exist_ok=True)
        if kind == "emptyDir":
            if spec[kind].get("medium") == "Memory":
                self._mount_tmpfs(path, spec[kind].get("sizeLimit"))
            return path
        files: dict[str, tuple[bytes, int | None]] = {}
        sources = spec[kind].get("sources") or [] if kind == "projected" else [{kind: spec[kind]}]
        for src in sources:
            files.update(await self._source(src))
        default_mode = spec[kind].get("defaultMode", 0o644)
        for rel, (data, mode) in files.items():
            target = path / rel
            if not target.resolve().is_relative_to(path.resolve()):
                raise VolumeError(f"invalid path {rel!r}: it leaves the volume")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, mode if mode is not None else default_mode)
        return path

    async def _source(self, src: dict[str, Any]) -> dict[str, tuple[bytes, int | None]]:
        if "serviceAccountToken" in src:
            t = src["serviceAccountToken"]
            token = await self.pod.ctx.request_token(t.get("audience"), int(t.get("expirationSeconds", 3600)))
            return {t["path"]: (token.encode(), None)}
        if "downwardAPI" in src:
            out: dict[str, tuple[bytes, int | None]] = {}
            for item in src["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    value = self.pod._field(item["fieldRef"]["fieldPath"])
                else:
                    ref = item["resourceFieldRef"]
                    value = self.pod._resource(self._container(ref.get("containerName")), ref)
                out[item["path"]] = (value.encode(), item.get("mode"))
            return out
        kind = "secret" if "secret" in src else "configMap"
        ref = src[kind]
        obj_name = ref.get("secretName") or ref.get("name", "")
        obj = await (self.pod.ctx.get_secret(obj_name) if kind == "secret" else self.pod.ctx.get_configmap(obj_name))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise VolumeError(f'{kind.lower() if kind == "secret" else "configmap"} "{obj_name}" not found')
        data = (
            {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            if kind == "secret"
            else {
                **{k: v.encode() for k, v in (obj.get("data") or {}).items()},
                **{k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()},
            }
        )
        items = ref.get("items")
        if not items:
            return {k: (v, None) for k, v in data.items()}
        out = {}
        for item in items:
            if item["key"] not in data:
                if ref.get("optional"):
                    continue
                what = "secret" if kind == "secret" else "config"
                raise VolumeError(f"{kind.lower()} references non-existent {what} key: {item['key']}")
            out[item["path"]] = (data[item["key"]], item.get("mode"))
        return out

    def _container(self, name: str | None) -> Container:
        for c in self.pod.inits + self.pod.mains:
            if c.name == name:
                return c
        raise VolumeError(f"resourceFieldRef names no container of the pod: {name!r}")

    async def _claim(self, ref: dict[str, Any]) -> Path:
        claim = ref["claimName"]
        pvc = await self.pod.ctx.get_object("persistentvolumeclaims", claim)
        if pvc is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if not pv_name or (pvc.get("status") or {}).get("phase") != "Bound":
            raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = await self.pod.ctx.get_object("persistentvolumes", pv_name, namespaced=False)
        spec = (pv or {}).get("spec") or {}
        source = spec.get("local") or spec.get("hostPath")
        if not source:
            raise VolumeError(f'persistentvolume "{pv_name}" has no local or hostPath source this node can mount')
        path = Path(source["path"])
        if not path.is_dir():
            raise VolumeError(f'path "{path}" of persistentvolume "{pv_name}" does not exist on the node')
        return path

    def _mount_tmpfs(self, path: Path, size_limit: str | None) -> None:
        opts = "mode=1777" + (f",size={int(parse_quantity(size_limit))}" if size_limit else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)
        self.tmpfs.append(path)

    def mounts(self, c: Container) -> list[dict[str, Any]]:
        """The sandbox's mount list for ``c``: its volumeMounts, resolved to this pod's paths."""
        out = []
        for m in c.spec.get("volumeMounts") or []:
            spec = self.specs.get(m["name"])
            if spec is None or m["name"] not in self.paths:
                raise VolumeError(f'volume "{m["name"]}" of container {c.name} is not a volume of the pod')
            src = self.paths[m["name"]]
            sub = m.get("subPath") or expand(m.get("subPathExpr", ""), c.env)
            if sub:
                src = src / sub
                if not src.resolve().is_relative_to(self.paths[m["name"]].resolve()):
                    raise VolumeError(f"subPath {sub!r} leaves volume {m['name']}")
                if not src.exists():
                    src.mkdir(parents=True)  # the kubelet creates a missing subPath directory
            kind = next((k for k in spec if k != "name"), "")
            readonly = bool(m.get("readOnly")) or kind in READ_ONLY_KINDS
            out.append({"src": str(src), "dst": m["mountPath"], "ro": readonly})
        return out

    def release(self) -> None:
        """Unmount the tmpfs emptyDirs (their content goes with them, as on a node)."""
        for path in self.tmpfs:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self.tmpfs = []
        shutil.rmtree(self.root, ignore_errors=True)
