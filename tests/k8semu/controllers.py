"""Controllers (placeholder)."""
from typing import Any
def start_controllers(store: Any, kuberay: bool = False) -> list[Any]:
    return []
