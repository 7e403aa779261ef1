"""What importing the project costs: light paths stay light, no module sets a matplotlib backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("jax", "mujoco_playground", "stable_baselines3", "torch")
PACKAGES = (
    "jacobian_wrappers",
    "callbacks",
    "world_models",
    "dynamic_sparsity",
    "dynamic_sparsity.analysis",
    "dynamic_sparsity.mbrl",
    "dynamic_sparsity.sweeps",
)


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reading_data_statistics_and_report_import_no_simulator_nor_learner(tmp_path) -> None:
    """A data set is written, read, analysed and reported with numpy, h5py and matplotlib only."""
    result = _run(
        f"""
        import json, sys
        import numpy as np
        from dynamic_sparsity.analysis import (DatasetMeta, TransitionReader, TransitionWriter,
                                               analyse_dataset, write_report, GlobalZeros,
                                               zero_mask)
        import dynamic_sparsity.analysis.figures, dynamic_sparsity.analysis.stats
        import dynamic_sparsity.analysis.storage, dynamic_sparsity.analysis.analysis
        meta = DatasetMeta("Fake", "float64", 0.01, ("a", "b"), ("a", "b"), ("u",), versions={{}})
        rng = np.random.default_rng(0)
        n = 40
        rows = {{
            "state": rng.normal(size=(n, 2)), "action": rng.normal(size=(n, 1)),
            "next_state": rng.normal(size=(n, 2)), "reward": np.zeros(n),
            "episode": np.arange(n) // 10, "step": (np.arange(n) % 10).astype(np.int32),
            "terminated": np.zeros(n, bool), "truncated": np.arange(n) % 10 == 9,
            "n_contacts": np.zeros(n, np.int32),
            "jacobian_state": rng.normal(size=(n, 2, 2)) * (rng.random((n, 2, 2)) < 0.5),
            "jacobian_action": rng.normal(size=(n, 2, 1)),
            "jacobian_nonsmooth": np.zeros((n, 3), bool),
        }}
        path = {str(tmp_path / "d.h5")!r}
        with TransitionWriter(path, meta, chunk_size=16) as w:
            w.append(rows)
        with TransitionReader(path) as r:
            GlobalZeros((2, 3)).update(zero_mask(np.concatenate(
                [r.read("jacobian_state"), r.read("jacobian_action")], axis=2)))
        write_report([analyse_dataset(path, tsne_samples=0)], {str(tmp_path / "rep")!r})
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    assert result == []
    assert (tmp_path / "rep" / "report.md").exists()


def test_world_models_import_no_simulator_nor_sb3() -> None:
    loaded = _run(
        """
        import json, sys
        import world_models
        print(json.dumps([m for m in ("jax", "mujoco_playground", "stable_baselines3")
                          if m in sys.modules]))
        """
    )
    assert loaded == []


def test_no_module_changes_the_matplotlib_backend() -> None:
    """Every module of the project imported in turn, with an unusual backend chosen first."""
    result = _run(
        f"""
        import importlib, json, pkgutil
        import matplotlib
        matplotlib.use("svg")
        changed = []
        for package in {PACKAGES!r}:
            pkg = importlib.import_module(package)
            modules = pkgutil.iter_modules(pkg.__path__)
            names = [package] + [f"{{package}}.{{m.name}}" for m in modules]
            for name in names:
                importlib.import_module(name)
                if matplotlib.get_backend().lower() != "svg":
                    changed.append(name)
        print(json.dumps({{"changed": changed, "backend": matplotlib.get_backend()}}))
        """
    )
    assert result == {"changed": [], "backend": "svg"}


#: Each package may import those of lower floors only (and itself).
FLOORS = {
    "dynamic_sparsity.analysis": 0,
    "jacobian_wrappers": 1,
    "world_models": 2,
    "callbacks": 2,
    "dynamic_sparsity.mbrl": 3,
    "dynamic_sparsity.sweeps": 3,
}


def _import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (at any level: a function's import counts)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    mods = {}
    for package in ("jacobian_wrappers", "callbacks", "world_models", "dynamic_sparsity"):
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            targets |= {t for t in map(resolve, found) if t is not None and t != name}
        graph[name] = targets
    return graph


def _package(module: str) -> str:
    return max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of ``graph`` (depth-first search for a back edge), or ``None``."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def _up_a_floor(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of a package of the same or a higher floor than the importer's (its own aside)."""
    bad = []
    for module, targets in graph.items():
        if module == "dynamic_sparsity":  # the namespace imports none of its packages
            bad += [(module, t) for t in targets]
            continue
        own = _package(module)
        for target in targets:
            other = _package(target)
            if other != own and FLOORS[other] >= FLOORS[own]:
                bad.append((module, target))
    return bad


def test_no_import_circle_and_no_import_up_a_floor() -> None:
    graph = _import_graph()
    assert len(graph) > 50 and "world_models.base" in graph  # the walk saw the tree
    assert _circle(graph) is None
    assert _up_a_floor(graph) == []


def test_the_import_checks_can_fail() -> None:
    """A hand-made circle and imports up or across a floor are caught."""
    circle = {"world_models.a": {"world_models.b"}, "world_models.b": {"world_models.a"}}
    assert _circle(circle) == ["world_models.a", "world_models.b", "world_models.a"]
    assert _circle({"world_models.a": {"world_models.b"}, "world_models.b": set()}) is None
    up = {"jacobian_wrappers.x": {"world_models.y"}, "callbacks.z": {"world_models.y"}}
    assert _up_a_floor(up) == [
        ("jacobian_wrappers.x", "world_models.y"),
        ("callbacks.z", "world_models.y"),
    ]
