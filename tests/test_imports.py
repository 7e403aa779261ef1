"""What importing the project costs: light paths stay light, no module sets a matplotlib backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("jax", "mujoco_playground", "stable_baselines3", "torch")
PACKAGES = ("jacobian_wrappers", "callbacks", "world_models", "sparsity", "mbrl", "sweeps")


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
        from sparsity import (DatasetMeta, TransitionReader, TransitionWriter, analyse_dataset,
                              write_report, GlobalZeros, zero_mask)
        import sparsity.figures, sparsity.stats, sparsity.storage, sparsity.analysis
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


def test_docs_site_builds_strictly(tmp_path) -> None:
    """Every docs page and link resolves (mkdocs --strict); a broken link fails the build."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    mkdocs = Path(sys.executable).with_name("mkdocs")
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}
    cmd = [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")]
    ok = subprocess.run([*cmd, "-f", str(root / "mkdocs.yml")], capture_output=True, env=env)
    assert ok.returncode == 0, ok.stderr.decode()[-2000:]
    # The same site with one broken link must fail.
    copy = tmp_path / "copy"
    shutil.copytree(root / "docs", copy / "docs")
    shutil.copy(root / "mkdocs.yml", copy / "mkdocs.yml")
    with open(copy / "docs" / "pitfalls.md", "a") as f:
        f.write("\n[gone](no-such-page.md)\n")
    broken = subprocess.run([*cmd, "-f", str(copy / "mkdocs.yml")], capture_output=True, env=env)
    assert broken.returncode != 0 and b"no-such-page.md" in broken.stderr
