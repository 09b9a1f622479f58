"""The one place Ray and Python versions are pinned (images, extras and docs are tested against it)."""

RAY_VERSION = "2.60.0"
PYTHON_VERSION = "3.11"
