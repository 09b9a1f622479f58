"""Environment and argv of process-kubelet containers: ``env``/``envFrom`` (value,
secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef), ``$(VAR)`` expansion and the
termination-message path rewrite. A mixin of :class:`kubelet_process.PodRunner`."""

from __future__ import annotations

import base64
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..controlplane import API_SERVICE_IP
from .containerfs import IMAGE_HOME
from .containers import ConfigError, Container, expand, parse_quantity

if TYPE_CHECKING:
    from .kubelet_api import PodContext
    from .kubelet_process import ProcessKubelet
    from .netns import PodNet

log = logging.getLogger(__name__)


class PodEnv:
    """Resolves a container's env and argv against the API server (through the PodContext)."""

    k: ProcessKubelet
    ctx: PodContext
    pod: dict[str, Any]
    spec: dict[str, Any]
    name: str
    namespace: str
    uid: str
    dir: Path
    net: PodNet | None
    inits: list[Container]
    mains: list[Container]

    async def _secret_or_cm(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = await (self.ctx.get_secret(name) if kind == "secret" else self.ctx.get_configmap(name))
        if obj is None and not optional:
            raise ConfigError(f'{kind} "{name}" not found')
        if obj is None or kind != "secret":
            return None if obj is None else dict(obj.get("data") or {})
        return {
            **{k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()},
            **(obj.get("stringData") or {}),
        }

    def _field(self, path: str) -> str:
        md, net = self.pod.get("metadata", {}), self.net
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.spec.get("nodeName") or self.k.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": net.ip if net else "",
            "status.podIPs": net.ip if net else "",
            "status.hostIP": net.host_ip if net else "",
            "status.hostIPs": net.host_ip if net else "",
        }
        if path not in simple:
            raise ConfigError(f"unsupported fieldRef {path!r}")
        return simple[path]

    def _resource(self, c: Container, ref: dict[str, Any]) -> str:
        spec = c.spec
        if ref.get("containerName"):
            spec = next((x.spec for x in self.inits + self.mains if x.name == ref["containerName"]), spec)
        kind, _, res = ref["resource"].partition(".")
        res_map = spec.get("resources") or {}
        val = (
            (res_map.get(kind) or {}).get(res) or (res_map.get("limits") or {}).get(res)
            if kind == "requests"
            else (res_map.get(kind) or {}).get(res)
        )
        if val is None:
            val = (os.cpu_count() or 1) if res == "cpu" else psutil.virtual_memory().total
        divisor = parse_quantity(ref.get("divisor", "1"))
        return str(max(1, math.ceil(parse_quantity(val) / divisor - 1e-9)))

    def _service_env(self) -> dict[str, str]:
        """The `kubernetes` Service's variables, which the kubelet gives every container."""
        if not self.k.api_relay:
            return {}
        ip, port = API_SERVICE_IP, "443"
        return {
            "KUBERNETES_SERVICE_HOST": ip,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{ip}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{ip}:{port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": port,
            "KUBERNETES_PORT_443_TCP_ADDR": ip,
        }

    async def resolve_env(self, c: Container) -> dict[str, str]:
        tpath = c.spec.get("terminationMessagePath", "/dev/termination-log")
        venv_bin = os.path.dirname(sys.executable)
        env: dict[str, str] = {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
            "VIRTUAL_ENV": os.path.dirname(venv_bin),
            "HOME": IMAGE_HOME if self.k.use_mountns else str(self.dir / "containers" / c.name / "home"),
            "HOSTNAME": self.name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "K8SEMU_TERMINATION_MESSAGE_PATH": str(c.term_path),
            **self._service_env(),
        }
        if not self.k.use_mountns:
            env["TMPDIR"] = str(self.dir / "containers" / c.name / "tmp")
        defined: dict[str, str] = {}
        for ef in c.spec.get("envFrom") or []:
            ref = ef.get("secretRef") or ef.get("configMapRef") or {}
            data = await self._secret_or_cm(
                "secret" if "secretRef" in ef else "configmap", ref.get("name", ""), bool(ref.get("optional"))
            )
            defined.update({ef.get("prefix", "") + k: v for k, v in (data or {}).items()})
        for e in c.spec.get("env") or []:
            vf = e.get("valueFrom")
            if vf is None:
                defined[e["name"]] = expand(str(e.get("value", "")), defined)
                continue
            if "fieldRef" in vf:
                defined[e["name"]] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                defined[e["name"]] = self._resource(c, vf["resourceFieldRef"])
            else:
                kind = "secret" if "secretKeyRef" in vf else "configmap"
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef") or {}
                data = await self._secret_or_cm(kind, ref.get("name", ""), bool(ref.get("optional")))
                if data is None:
                    continue
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {kind.capitalize()} {self.namespace}/{ref.get('name')}"
                    )
                defined[e["name"]] = data[ref["key"]]
        env.update({k: v.replace(tpath, str(c.term_path)) for k, v in defined.items()})
        return env

    def argv(self, c: Container) -> list[str]:
        cmd, args = list(c.spec.get("command") or []), list(c.spec.get("args") or [])
        if not cmd:
            log.warning(
                "%s/%s container %s has no command (image entrypoints are unknown): %s",
                self.namespace,
                self.name,
                c.name,
                "running args" if args else "sleeping",
            )
            cmd = [] if args else ["sleep", "infinity"]
        tpath = c.spec.get("terminationMessagePath", "/dev/termination-log")
        return [expand(a, c.env).replace(tpath, str(c.term_path)) for a in cmd + args]
