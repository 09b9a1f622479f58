"""Keep Secret values out of the hub's logs.

kubernetes_asyncio logs every response body at DEBUG (``"response body: %s"`` on the
``kubernetes_asyncio.client.rest`` logger). For Secrets — rayspawner's create and owner
patch, the orphan sweep's label-selected list — that body holds every user's Ray token
(base64), so a hub run with root logging at DEBUG would write them to its log.
:func:`install_secret_log_redaction` (run when :mod:`rayspawner.backends` is imported)
rewrites such records with the values replaced; other records pass unchanged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

REDACTED = "<redacted>"


class SecretBodyRedactor(logging.Filter):
    """kubernetes_asyncio logs every response body at DEBUG ("response body: %s"), which
    for Secrets (our create/patch, the orphan sweep's list) includes every user's Ray token.
    This filter rewrites such records with the Secret values replaced; other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not args or not isinstance(args[0], (bytes, str)):
            return True
        body = args[0].decode(errors="replace") if isinstance(args[0], bytes) else args[0]
        if "Secret" not in body:
            return True
        try:
            doc = json.loads(body)
        except ValueError:
            record.args = (f"<{len(body)} bytes mentioning a Secret, not shown>", *args[1:])
            return True
        record.args = (json.dumps(_redact_secrets(doc)), *args[1:])
        return True


def _redact_secrets(doc: Any) -> Any:
    if isinstance(doc, dict):
        out = {k: _redact_secrets(v) for k, v in doc.items()}
        if isinstance(out.get("items"), list):
            return out
        for key in ("data", "stringData"):
            if isinstance(out.get(key), dict) and ("metadata" in out or out.get("kind") in ("Secret", None)):
                out[key] = {k: REDACTED for k in out[key]}
        return out
    if isinstance(doc, list):
        return [_redact_secrets(x) for x in doc]
    return doc


def install_secret_log_redaction() -> None:
    """Put :class:`SecretBodyRedactor` on kubernetes_asyncio's REST logger (once)."""
    rest = logging.getLogger("kubernetes_asyncio.client.rest")
    if not any(isinstance(f, SecretBodyRedactor) for f in rest.filters):
        rest.addFilter(SecretBodyRedactor())
