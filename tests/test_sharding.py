"""Scale-out data paths: shards read as one data set, Ray-task shards, env batch over devices."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dynamic_sparsity.analysis import (
    ShardedReader,
    TransitionReader,
    TransitionWriter,
    open_reader,
    shard_path,
)
from dynamic_sparsity.analysis.analysis import analyse_dataset
from tests.helpers import write_linear
from world_models import TrainConfig, train


def copy_as(src, dst, episode_offset=0, **meta_changes):
    """``src``'s rows in a new file, episodes shifted, metadata changed."""
    with TransitionReader(src) as r:
        meta = dataclasses.replace(r.meta, **meta_changes)
        rows = {k: r.read(k) for k in r.columns}
    rows["episode"] = rows["episode"] + episode_offset
    if meta.precision == "float32":
        rows = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in rows.items()}
    with TransitionWriter(dst, meta, chunk_size=64) as w:
        w.append(rows)
    return dst


@pytest.fixture()
def shards(tmp_path):
    """Two shards (local episode ids 0..19 each) and the one file they make together."""
    folder = tmp_path / "linear"
    folder.mkdir()
    a = write_linear(folder / "linear.shard-000-of-002.h5", seed=0)
    b = write_linear(folder / "linear.shard-001-of-002.h5", seed=1, n_episodes=13, ep_len=17)
    whole = copy_as(a, tmp_path / "whole.h5")
    with TransitionReader(b) as r, TransitionWriter(whole, r.meta, resume=True) as w:
        rows = {k: r.read(k) for k in r.columns}
        rows["episode"] = rows["episode"] + 20
        w.append(rows)
    return folder, whole


def test_shards_read_as_the_one_file_they_make(shards) -> None:
    folder, whole = shards
    with open_reader(folder) as s, TransitionReader(whole) as w:
        assert isinstance(s, ShardedReader) and len(s) == len(w) == 20 * 25 + 13 * 17
        assert s.episode_offsets.tolist() == [0, 20]
        for key in w.columns:
            np.testing.assert_array_equal(s.read(key), w.read(key))
            np.testing.assert_array_equal(s.read(key, 480, 520), w.read(key, 480, 520))
        idx = np.array([0, 3, 499, 500, 501, len(w) - 1])
        for key, v in w.read_rows(idx, ["episode", "state"]).items():
            np.testing.assert_array_equal(s.read_rows(idx, ["episode", "state"])[key], v)
        chunks = list(s.iter_chunks(["episode"], 64, start=448, stop=600))  # across shards
        assert [len(c["episode"]) for c in chunks] == [64, 64, 24]
        np.testing.assert_array_equal(
            np.concatenate([c["episode"] for c in chunks]), w.read("episode", 448, 600)
        )
        got, want = s.episode_index(), w.episode_index()
        assert got.keys() == want.keys() and len(got) == 33
        assert all(np.array_equal(got[e], want[e]) for e in want)
    # A glob, a list and the folder are the same data set.
    assert len(open_reader(str(folder / "*.shard-*.h5"))) == len(
        open_reader(sorted(folder.iterdir()))
    )


def test_report_and_world_models_take_a_set_of_shards(shards) -> None:
    folder, whole = shards
    a, b = analyse_dataset(folder, tsne_samples=0), analyse_dataset(whole, tsne_samples=0)
    sa, sb = a.summary(), b.summary()
    sa.pop("path", None), sb.pop("path", None)
    assert json.dumps(sa, sort_keys=True) == json.dumps(sb, sort_keys=True)  # NaN == NaN here
    assert a.n_episodes == 33 and a.n_samples == 721
    cfg = TrainConfig(epochs=2, width=16, batch_size=64, horizon=2, progress=False)
    r1, r2 = train(folder, "state", cfg), train(whole, "state", cfg)
    (t1,), (t2,) = r1.split.test, r2.split.test  # global episode ids: the same test episodes
    np.testing.assert_array_equal(t1, t2)
    assert r1.metrics.mse_normalised == pytest.approx(r2.metrics.mse_normalised, rel=1e-6)


def test_mixed_shards_are_refused_naming_the_files(tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    a = write_linear(folder / "a.h5")
    b = copy_as(a, folder / "b.h5", env_name="Other")
    with pytest.raises(ValueError, match=r"a\.h5 and .*b\.h5 .*env_name 'Linear' != 'Other'"):
        open_reader(folder)
    b.unlink()
    copy_as(a, folder / "c.h5", precision="float32")
    with pytest.raises(ValueError, match=r"c\.h5 .*precision 'float64' != 'float32'"):
        open_reader(folder)
    with pytest.raises(FileNotFoundError, match="nothing.h5|no data set"):
        open_reader(tmp_path / "nothing-*.h5")
    with pytest.raises(ValueError, match="shard index"):
        shard_path("x.h5", 2, 2)


@pytest.mark.slow
def test_shards_collected_as_ray_tasks(tmp_path) -> None:
    pytest.importorskip("ray")
    import ray

    from dynamic_sparsity.sweeps import collect_shards

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        files = collect_shards(
            "CartpoleBalance", 101, tmp_path / "cartpole.h5", 2, n_envs=2,
            precision="float32", episode_length=20, seed=5, threshold=1e-6, chunk_size=16,
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert [p.rsplit("/", 1)[1] for p in files] == [
        "cartpole.shard-000-of-002.h5",
        "cartpole.shard-001-of-002.h5",
    ]
    with open_reader(files) as data:
        assert len(data) == 101 and data.meta.env_name == "CartpoleBalance"
        assert [r.meta.extra["shard"] for r in data.readers] == [[0, 2], [1, 2]]
        assert all(r.meta.threshold == 1e-6 and r.chunk_size == 16 for r in data.readers)
        ep = data.read("episode")
        per_shard = [set(r.read("episode").tolist()) for r in data.readers]
        assert len(set(ep.tolist())) == sum(len(s) for s in per_shard)  # global ids
        states = [r.read("state")[:2] for r in data.readers]
        assert not np.allclose(states[0], states[1])  # seeded apart: envs 0-1 and 2-3


DEVICES_SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    import jacobian_wrappers as jw

    assert len(jax.local_devices()) == 2, jax.local_devices()
    out = {}
    for devices in (1, 2):
        env = jw.PlaygroundVecEnv("CartpoleBalance", 4, precision="float64", seed=3,
                                  episode_length=15, devices=devices)
        env.reset()
        rng = np.random.default_rng(0)
        rows = []
        for _ in range(20):  # crosses an auto-reset
            env.step(rng.uniform(-1, 1, (4, 1)))
            t = env.last_transition
            rows.append(np.concatenate([t["state"], t["next_state"], t["reward"][:, None],
                                        t["jacobian_state"].reshape(4, -1),
                                        t["jacobian_action"].reshape(4, -1)], 1))
        out[devices] = np.stack(rows)
        n_shards = len(env._state.obs.sharding.device_set)
        out[f"shards{devices}"] = n_shards
    try:
        jw.PlaygroundVecEnv("CartpoleBalance", 3, devices=2)
    except ValueError as err:
        out["error"] = str(err)
    print(json.dumps({"max_diff": float(np.abs(out[1] - out[2]).max()),
                      "zeros_equal": bool(((out[1] == 0) == (out[2] == 0)).all()),
                      "shards": [out["shards1"], out["shards2"]], "error": out.get("error")}))
    """
)


@pytest.mark.slow
def test_env_batch_split_over_two_devices_gives_the_same_transitions() -> None:
    import os

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [sys.executable, "-c", DEVICES_SCRIPT], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["shards"] == [1, 2]
    assert got["max_diff"] <= 1e-12 and got["zeros_equal"]
    assert "n_envs=3 cannot be split over 2 devices" in got["error"]
