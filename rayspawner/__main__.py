"""``python -m rayspawner`` / ``rayspawner``: admin and demo commands.

- ``render``: print every object a spawn would create, without a cluster;
- ``demo``: run the local demo hub (LocalRaySpawner) on 127.0.0.1:8000;
- ``config-reference``: print the configuration reference (Markdown) from the traits' help.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "render": ("rayspawner.render", "print the objects a spawn would create (no cluster contacted)"),
    "demo": ("rayspawner.demo", "run the local demo hub with the Ray profile"),
    "config-reference": ("rayspawner.docs", "print the configuration reference from the traits' help"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: rayspawner COMMAND [options]", "", "commands:"]
        lines += [f"  {name:<18} {text}" for name, (_, text) in COMMANDS.items()]
        stream = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        stream.write("\n".join(lines) + "\n")
        return 0 if stream is sys.stdout else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
