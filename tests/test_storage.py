"""Data set storage: round trip, interruption (SIGKILL), resume, lazy reads, bad files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from dynamic_sparsity.analysis.storage import DatasetMeta, TransitionReader, TransitionWriter

META = DatasetMeta(
    env_name="Fake",
    precision="float64",
    dt=0.01,
    state_labels=("qpos:a", "qpos:b", "qvel:a", "qvel:b"),
    tangent_labels=("qpos:a", "qpos:b", "qvel:a", "qvel:b"),
    action_labels=("motor",),
    policy="test rows",
)


def fake_rows(n: int, start: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic rows; row ``i`` carries ``i`` in several columns."""
    rng = np.random.default_rng(seed + start)
    idx = np.arange(start, start + n)
    return {
        "state": rng.normal(size=(n, 4)),
        "action": rng.normal(size=(n, 1)),
        "next_state": rng.normal(size=(n, 4)),
        "reward": idx.astype(np.float64),
        "episode": idx // 10,
        "step": (idx % 10).astype(np.int32),
        "terminated": idx % 10 == 9,
        "truncated": np.zeros(n, bool),
        "n_contacts": (idx % 3).astype(np.int32),
        "jacobian_state": rng.normal(size=(n, 4, 4)) * (rng.random((n, 4, 4)) < 0.5),
        "jacobian_action": rng.normal(size=(n, 4, 1)),
        "jacobian_nonsmooth": rng.random((n, 5)) < 0.1,
    }


@pytest.mark.parametrize("compression", [None, "lzf", "gzip"])
def test_round_trip_and_metadata(tmp_path, compression):
    path = tmp_path / "d.h5"
    rows = fake_rows(250)
    with TransitionWriter(path, META, chunk_size=64, compression=compression) as w:
        w.append({k: v[:100] for k, v in rows.items()})
        w.append({k: v[100:] for k, v in rows.items()})
    with TransitionReader(path) as r:
        assert len(r) == 250
        assert r.meta == META
        for key, value in rows.items():
            np.testing.assert_array_equal(r.read(key), value)
        assert r.read("state", 10, 20).shape == (10, 4)
        eps = r.episode_index()
        assert sorted(eps) == list(range(25))
        np.testing.assert_array_equal(eps[3], np.arange(30, 40))
        assert "CheetahRun" not in repr(r) and "250 rows" in repr(r)


def test_chunked_reading_covers_every_row_once(tmp_path):
    path = tmp_path / "d.h5"
    rows = fake_rows(300)
    with TransitionWriter(path, META, chunk_size=64) as w:
        w.append(rows)
    with TransitionReader(path) as r:
        assert r.chunk_size == 64
        chunks = list(r.iter_chunks(["reward", "jacobian_state"]))
        assert [len(c["reward"]) for c in chunks] == [64, 64, 64, 64, 44]
        np.testing.assert_array_equal(np.concatenate([c["reward"] for c in chunks]), rows["reward"])
        part = list(r.iter_chunks(["reward"], chunk_size=50, start=20, stop=130))
        np.testing.assert_array_equal(
            np.concatenate([c["reward"] for c in part]), np.arange(20, 130, dtype=float)
        )
        sel = r.read_rows(np.array([3, 70, 299]), ["reward"])
        np.testing.assert_array_equal(sel["reward"], [3.0, 70.0, 299.0])
        # Nothing is read at opening: h5py datasets are lazy handles.
        assert isinstance(r._file["jacobian_state"], h5py.Dataset)


def test_interrupt_then_resume(tmp_path):
    """A writer killed with SIGKILL leaves its complete chunks; resume appends after them."""
    path = tmp_path / "killed.h5"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from tests.test_storage import META, fake_rows
        from dynamic_sparsity.analysis.storage import TransitionWriter
        w = TransitionWriter({str(path)!r}, META, chunk_size=32)
        w.append({{k: v for k, v in fake_rows(100).items()}})  # 3 chunks + 4 buffered rows
        print("written", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert proc.stdout.readline().strip() == "written"
        with pytest.raises(BlockingIOError, match="open for writing by another process"):
            TransitionReader(path)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with TransitionReader(path) as r:
        assert len(r) == 96  # the 4 buffered rows of the unfinished chunk are lost
        np.testing.assert_array_equal(r.read("reward"), np.arange(96.0))
    with TransitionWriter(path, META, chunk_size=32, resume=True) as w:
        assert w.n_rows == 96 and w.next_episode == 10  # max episode id + 1
        w.append(fake_rows(54, start=96))
    full = fake_rows(150)
    with TransitionReader(path) as r:
        assert len(r) == 150
        np.testing.assert_array_equal(r.read("reward"), full["reward"])
        np.testing.assert_array_equal(r.read("episode"), full["episode"])


def test_keyboard_interrupt_keeps_buffered_rows(tmp_path):
    path = tmp_path / "d.h5"
    with pytest.raises(KeyboardInterrupt), TransitionWriter(path, META, chunk_size=64) as w:
        w.append(fake_rows(10))
        raise KeyboardInterrupt
    with TransitionReader(path) as r:
        assert len(r) == 10


def test_resume_refuses_other_env(tmp_path):
    path = tmp_path / "d.h5"
    with TransitionWriter(path, META) as w:
        w.append(fake_rows(5))
    other = DatasetMeta(**{**vars(META), "env_name": "Other"})
    with pytest.raises(ValueError, match="env_name"):
        TransitionWriter(path, other, resume=True)
    with pytest.raises(FileExistsError, match="resume=True"):
        TransitionWriter(path, META)


def test_bad_rows(tmp_path):
    with TransitionWriter(tmp_path / "d.h5", META) as w:
        rows = fake_rows(5)
        with pytest.raises(ValueError, match="jacobian_state"):
            w.append({**rows, "jacobian_state": np.zeros((5, 3, 3))})
        with pytest.raises(ValueError, match="lack columns"):
            w.append({k: v for k, v in rows.items() if k != "reward"})
    with pytest.raises(ValueError, match="chunk_size"):
        TransitionWriter(tmp_path / "e.h5", META, chunk_size=0)
    with pytest.raises(ValueError, match="compression"):
        TransitionWriter(tmp_path / "e.h5", META, compression="zstd")


def test_foreign_truncated_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data set"):
        TransitionReader(tmp_path / "nope.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        TransitionReader(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match="not a dynamic-sparsity transitions data set"):
        TransitionReader(foreign)
    good = tmp_path / "good.h5"
    with TransitionWriter(good, META, chunk_size=16) as w:
        w.append(fake_rows(200))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated|damaged"):
        r = TransitionReader(truncated)
        r.read("jacobian_state")  # pragma: no cover - opening already fails


def test_without_jacobians(tmp_path):
    meta = DatasetMeta(**{**vars(META), "jacobians": False})
    rows = {k: v for k, v in fake_rows(20).items() if not k.startswith("jacobian")}
    with TransitionWriter(tmp_path / "d.h5", meta) as w:
        w.append(rows)
    with TransitionReader(tmp_path / "d.h5") as r:
        assert "jacobian_state" not in r.columns
        with pytest.raises(KeyError, match="without Jacobians"):
            r.read("jacobian_state")


def _overwrite_inside_chunk(path, name: str, chunk: int) -> None:
    """Flip bytes in the middle of one stored HDF5 chunk of array ``name`` (not the end)."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(chunk)
    offset = info.byte_offset + info.size // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = bytearray(fh.read(16))
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_damaged_chunk_is_detected_by_its_checksum(tmp_path):
    path = tmp_path / "d.h5"
    rows = fake_rows(300)
    with TransitionWriter(path, META, chunk_size=64) as w:
        w.append(rows)
    _overwrite_inside_chunk(path, "jacobian_state", chunk=2)  # rows 128-191
    with TransitionReader(path) as r:  # opening is fine: nothing is read yet
        np.testing.assert_array_equal(r.read("reward"), rows["reward"])  # other arrays intact
        np.testing.assert_array_equal(
            r.read("jacobian_state", 0, 128), rows["jacobian_state"][:128]
        )
        msg = r"d\.h5 is damaged: array 'jacobian_state', rows 128-191"
        with pytest.raises(ValueError, match=msg):
            r.read("jacobian_state")
        with pytest.raises(ValueError, match=msg):
            list(r.iter_chunks(["jacobian_state"]))
        with pytest.raises(ValueError, match=msg):
            r.read_rows(np.array([5, 150]), ["jacobian_state"])
    # Without checksums the same damage is read silently: the reason they exist.
    plain = tmp_path / "plain.h5"
    with TransitionWriter(plain, META, chunk_size=64, checksums=False) as w:
        w.append(rows)
    _overwrite_inside_chunk(plain, "jacobian_state", chunk=2)
    with pytest.warns(UserWarning, match="no checksums"), TransitionReader(plain) as r:
        assert not np.array_equal(r.read("jacobian_state"), rows["jacobian_state"])


def test_version_1_files_still_open_with_a_warning(tmp_path):
    """A file as format version 1 wrote it: no checksums, no jacobian_nonsmooth."""
    path = tmp_path / "v1.h5"
    rows = fake_rows(100)
    with TransitionWriter(path, META, chunk_size=32, checksums=False) as w:
        w.append(rows)
    with h5py.File(path, "a") as f:
        del f["jacobian_nonsmooth"]
        f.attrs["format_version"] = 1
    with pytest.warns(UserWarning, match="no checksums"), TransitionReader(path) as r:
        assert r.format_version == 1 and "jacobian_nonsmooth" in r.columns
        np.testing.assert_array_equal(r.read("jacobian_state"), rows["jacobian_state"])
        flags = r.read("jacobian_nonsmooth", 10, 20)
        assert flags.shape == (10, 5) and flags.dtype == bool and not flags.any()
        chunk = next(r.iter_chunks(["jacobian_nonsmooth", "reward"]))
        assert chunk["jacobian_nonsmooth"].shape == (32, 5)
    with pytest.raises(ValueError, match="format version 1"):
        TransitionWriter(path, META, resume=True)


def test_dataset_card_returns_and_a_digest_that_ignores_the_file_layout(tmp_path):
    """dataset_card: returns of the complete episodes summed by hand; the digest equals one
    computed here from the arrays and is the same for another chunking and compression."""
    import hashlib

    from dynamic_sparsity.analysis import dataset_card

    rows = fake_rows(255)  # episodes of 10 rows: 25 complete, the 26th cut at 5 rows
    paths = {}
    for name, chunk, compression in (("a", 64, None), ("b", 17, "gzip")):
        paths[name] = tmp_path / f"{name}.h5"
        with TransitionWriter(paths[name], META, chunk_size=chunk, compression=compression) as w:
            w.append(rows)
    card = dataset_card(paths["a"])
    by_hand = [sum(range(10 * e, 10 * e + 10)) for e in range(25)]
    assert card["rows"] == 255 and card["episodes"] == 25
    assert card["mean_return"] == pytest.approx(np.mean(by_hand), abs=0.01)
    assert card["std_return"] == pytest.approx(np.std(by_hand), abs=0.01)
    digest = hashlib.sha256()
    for name in sorted(rows):
        digest.update(name.encode() + np.ascontiguousarray(rows[name]).tobytes())
    assert card["sha256"] == digest.hexdigest() == dataset_card(paths["b"])["sha256"]
    changed = {k: v.copy() for k, v in rows.items()}
    changed["reward"][7] += 1e-12
    with TransitionWriter(tmp_path / "c.h5", META, chunk_size=64) as w:
        w.append(changed)
    assert dataset_card(tmp_path / "c.h5")["sha256"] != card["sha256"]
    assert card["policy"] == "test rows" and card["bytes"] == paths["a"].stat().st_size
