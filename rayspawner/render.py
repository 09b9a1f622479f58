"""``rayspawner render``: print every object a spawn would create, as YAML.

No cluster is contacted: the spawner is built from the hub config with a
stand-in user, the chosen profile and options are validated exactly as for a
real spawn (an invalid option exits 2 with the user's message), and the
manifests come from the same pure builders. Secret values are redacted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from types import SimpleNamespace
from typing import Any

import yaml

from .errors import RaySpawnerError

NOTEBOOK_UID = "00000000-0000-0000-0000-000000000000"
_DUMMY_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: render, cluster: {server: "https://render.invalid"}}]
users: [{name: render, user: {}}]
contexts: [{name: render, context: {cluster: render, user: render}}]
current-context: render
"""


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rayspawner render", description=__doc__.splitlines()[0])
    p.add_argument("-f", "--config", required=True, help="jupyterhub_config.py to load")
    p.add_argument("--user", required=True, help="user name")
    p.add_argument("--server", default="", help="named server (default: the default server)")
    p.add_argument("--profile", default="", help="profile slug (default: the default profile)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a profile option (repeatable)")
    p.add_argument(
        "--backend", choices=["pods", "kuberay"], help="backend to render (default: ray_backend, auto → pods)"
    )
    return p.parse_args(argv)


def _user_options(args: argparse.Namespace) -> dict[str, str]:
    options: dict[str, str] = {}
    if args.profile:
        options["profile"] = args.profile
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"rayspawner render: --option needs KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def _load_config(path: str):
    from traitlets.config.loader import PyFileConfigLoader

    if not os.path.isfile(path):
        raise SystemExit(f"rayspawner render: config file {path!r} not found")
    directory, name = os.path.split(os.path.abspath(path))
    return PyFileConfigLoader(name, path=directory).load_config()


async def render(args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        return await _render(args)
    finally:
        from kubespawner.clients import _client_cache

        for client in list(_client_cache.values()):
            await client.api_client.close()


async def _render(args: argparse.Namespace) -> list[dict[str, Any]]:
    from kubernetes_asyncio.client import ApiClient

    from .manifests import common
    from .spawner import RaySpawner

    config = _load_config(args.config)
    user = SimpleNamespace(name=args.user, id=1, url=f"/user/{args.user}/", escaped_name=args.user)
    orm = SimpleNamespace(name=args.server, server=None, user_options={}, state=None)
    spawner = RaySpawner(_mock=True, user=user, config=config, orm_spawner=orm)
    spawner.user_options = _user_options(args)
    spec = await spawner.load_ray_options()
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await spawner.get_pod_manifest())
    objects: list[dict[str, Any]] = [pod]
    if spec:
        backend = args.backend or ("kuberay" if spawner.ray_backend == "kuberay" else "pods")
        if backend == "kuberay":
            from .manifests import kuberay as builder
        else:
            from .manifests import pods as builder
        owner = common.owner_reference(spawner.pod_name, NOTEBOOK_UID)
        if spec.auth_enabled:
            objects.append(common.redact(common.token_secret(spec, "<redacted>", owner)))
        objects.extend(builder.cluster_objects(spec, owner))
    return objects


def main(argv: list[str]) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as kc:
        # never contact a cluster: KubeSpawner loads a kube config at start-up
        kc.write(_DUMMY_KUBECONFIG)
        kc.flush()
        os.environ["KUBECONFIG"] = kc.name
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        try:
            objects = asyncio.run(render(args))
        except RaySpawnerError as e:
            sys.stderr.write(f"error: {e.message}\n")
            return 2
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0
