"""The architecture the folders promise: imports run one way, pipeline/ -> cvae/training.py ->
cvae/tracks/ -> the shared modules, with no cycle, no track importing another, and the choice
of track made in cvae/tracks/ alone."""
import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> nx.DiGraph:
    """Module -> every project module it imports, at the top or inside a function."""
    files = sorted([*REPO.glob("cvae/**/*.py"), *REPO.glob("pipeline/*.py")])
    modules = {_module(f): f for f in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in modules and t != name)
    return graph


def _layer(module: str) -> int:
    if module.startswith("pipeline"):
        return 3
    if module == "cvae.training":
        return 2
    if module.startswith("cvae.tracks"):
        return 1
    return 0  # shared: config, data, metrics, losses, schedules, runtime, samples, figures, vae


def test_imports_have_no_cycle():
    assert list(nx.simple_cycles(_import_graph())) == []


def test_imports_run_one_way():
    upward = [(a, b) for a, b in _import_graph().edges if _layer(b) > _layer(a)]
    assert upward == []


def test_no_track_imports_another():
    def track(module):
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "tracks" else None

    crossing = [(a, b) for a, b in _import_graph().edges
                if track(a) and track(b) and track(a) != track(b)]
    assert crossing == []


@pytest.mark.parametrize("pattern", ["isinstance(model", '["track"]', "DanceCVAE", "SVG("])
def test_the_track_is_chosen_in_cvae_tracks_alone(pattern):
    """Outside cvae/tracks/, no code tests a model's class or the data's track (the shard reader
    in cvae/data/ reads its own format)."""
    outside = [f for f in [*REPO.glob("cvae/*.py"), *REPO.glob("pipeline/*.py")]
               if pattern in f.read_text()]
    assert outside == []
