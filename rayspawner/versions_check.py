"""Compare the notebook's and the cluster's Ray and Python versions.

Ray Client needs the same Ray version and the same Python minor on both sides;
otherwise ``ray.init()`` fails later with a cryptic error. We say it at start.
"""

from __future__ import annotations


def compare_versions(notebook: dict, cluster: dict, notebook_image: str, cluster_image: str) -> str | None:
    """None if compatible, else a message naming both sides and how to fix it."""
    problems = []
    if not notebook.get("ray"):
        problems.append(f"the notebook image {notebook_image} has no Ray installed")
    elif cluster.get("ray") and notebook["ray"] != cluster["ray"]:
        problems.append(f"Ray {notebook['ray']} in the notebook but Ray {cluster['ray']} in the cluster")
    if not cluster.get("ray"):
        problems.append(f"the Ray image {cluster_image} has no Ray installed")
    if notebook.get("python") and cluster.get("python") and notebook["python"] != cluster["python"]:
        problems.append(f"Python {notebook['python']} in the notebook but Python {cluster['python']} in the cluster")
    if not problems:
        return None
    return (
        "Ray version mismatch: "
        + "; ".join(problems)
        + f" (notebook image {notebook_image}, Ray image {cluster_image}). "
        "A notebook driving its cluster needs the same Ray version and Python minor on both sides, and "
        'switching to Ray Client (ray_connect_mode = "client") would not help: it needs them to match '
        "too. Ask your admin to align ray_image with the notebook image (or leave ray_image empty to use "
        "the notebook image)."
    )
