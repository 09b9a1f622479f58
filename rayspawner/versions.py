"""The one place Ray and Python versions are pinned (images, extras and docs are tested against it)."""

RAY_VERSION = "2.60.0"
PYTHON_VERSION = "3.11"

#: Distributions that a Jupyter install pulls in and that slow down the start of every Python
#: process of Ray, mapped to their import names. rfc3987-syntax (jsonschema's "format-nongpl"
#: extra, required by jupyter-events) builds ~35 Earley parsers when jsonschema imports it,
#: and Ray's runtime_env, every Ray agent and `import ray` in a kernel import jsonschema. Measured
#: on a 2-core machine: `import ray` 1.9 s → 0.6 s; a local `ray start --head` 12.8 s wall and
#: 19 CPU-s → 6.2 s and 8 CPU-s. jsonschema works without it (it then skips "iri" format checks).
#: scripts/install.sh and the notebook image uninstall these; the local spawner logs a hint.
SLOW_IMPORT_DISTRIBUTIONS = {"rfc3987-syntax": "rfc3987_syntax"}
