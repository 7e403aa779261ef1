"""Sweeps on Ray Tune: a tiny grid on a local 2-CPU Ray, a trial killed and resumed, bad input."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from dynamic_sparsity.sweeps import SweepJob, check_ray_address, import_ray, run_job, run_sweep
from world_models import TrainConfig, TrainerCallback

pytest.importorskip("ray.tune")

CONFIG = TrainConfig(epochs=4, width=16, batch_size=64, horizon=2, progress=False)


@pytest.fixture()
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def grid(path: Path) -> list[SweepJob]:
    return [SweepJob("linear", (str(path),), "mlp", "state", seed) for seed in (1, 2, 3)]


@pytest.mark.slow
def test_killed_trial_resumes_from_its_checkpoint_and_others_are_untouched(
    linear_h5, tmp_path, local_ray
) -> None:
    """Seed 2's worker is SIGKILLed after epoch 2; the resumed sweep finishes it from there."""
    marker = tmp_path / "killed"

    class KillOnce(TrainerCallback):
        def on_epoch_end(self, trainer, entry):
            if trainer.config.seed == 2 and trainer.epoch == 2 and not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "sweep"
    jobs = grid(linear_h5)
    with pytest.warns(RuntimeWarning, match="did not finish"):
        rows = run_sweep(jobs, CONFIG, out, ray=True, callbacks=[KillOnce()])
    assert marker.exists() and sorted(r["seed"] for r in rows) == [1, 3]
    done = {j.seed: out / "runs" / f"{j.tag}.json" for j in jobs}
    assert not done[2].exists()
    before = {s: (done[s].read_text(), done[s].stat().st_mtime_ns) for s in (1, 3)}
    time.sleep(0.05)

    resumed = run_sweep(jobs, CONFIG, out, ray=True, resume=True, callbacks=[KillOnce()])
    assert [r["seed"] for r in resumed] == [1, 2, 3]
    for s in (1, 3):  # the finished trials were not run again
        assert (done[s].read_text(), done[s].stat().st_mtime_ns) == before[s]
    row = json.loads(done[2].read_text())
    assert row["start_epoch"] == 2  # killed after epoch 2: nothing but the running epoch lost
    # The resumed run is the uninterrupted one: model, optimiser and RNG came back.
    whole = run_job(jobs[1], CONFIG)
    assert row["mse_normalised"] == pytest.approx(whole["mse_normalised"], rel=1e-6)


@pytest.mark.slow
def test_python_entry_point_serial_equals_ray(linear_h5, tmp_path, local_ray) -> None:
    """The same grid serially and on Ray: the same rows (the engines do not change results)."""
    jobs = grid(linear_h5)[:2]
    serial = run_sweep(jobs, CONFIG, tmp_path / "serial")
    on_ray = run_sweep(jobs, CONFIG, tmp_path / "ray", ray=True)
    for a, b in zip(serial, on_ray, strict=True):
        assert (a["seed"], a["loss"]) == (b["seed"], b["loss"])
        assert a["mse_normalised"] == pytest.approx(b["mse_normalised"], rel=1e-6)
    assert (tmp_path / "ray" / "ray" / "sweep").is_dir()  # Tune's experiment, for --resume
    assert len(list((tmp_path / "ray" / "tb").iterdir())) == 2


def test_serial_sweep_continues_an_interrupted_run(linear_h5, tmp_path) -> None:
    """Without Ray, an interrupted run's checkpoint is continued by the next sweep."""

    class StopAt2(TrainerCallback):
        def on_epoch_end(self, trainer, entry):
            if trainer.epoch == 2:
                raise KeyboardInterrupt

    jobs = grid(linear_h5)[:1]
    with pytest.raises(KeyboardInterrupt):
        run_sweep(jobs, CONFIG, tmp_path, callbacks=[StopAt2()])
    (row,) = run_sweep(jobs, CONFIG, tmp_path)
    assert row["start_epoch"] == 2
    assert row["mse_normalised"] == pytest.approx(run_job(jobs[0], CONFIG)["mse_normalised"])


def test_bad_input(linear_h5, tmp_path, monkeypatch) -> None:
    job = grid(linear_h5)[0]
    with pytest.raises(ValueError, match="same tag"):
        run_sweep([job, job], CONFIG, tmp_path)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        check_ray_address("127.0.0.1:9")  # the discard port: nothing listens
    assert time.perf_counter() - start < 10
    with pytest.raises(ValueError, match="not 'host:port'"):
        check_ray_address("nohost")
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        run_sweep([job], CONFIG, tmp_path, ray="127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        import_ray()
    with pytest.raises(ImportError, match=r"ray\[tune\]"):
        run_sweep([job], CONFIG, tmp_path / "x", ray=True)


def test_script_without_ray_says_how_to_install(linear_h5, tmp_path) -> None:
    import subprocess

    script = Path(__file__).resolve().parents[1] / "examples" / "train_world_models.py"
    code = (
        "import sys, runpy; sys.modules['ray'] = None; "
        f"sys.argv = ['x', '--data', {str(linear_h5)!r}, '--out', {str(tmp_path)!r}, '--ray']; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and 'pip install -e ".[ray]"' in done.stderr
