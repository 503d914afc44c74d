"""Checkpoint files: atomic writes, checked safetensors, and never a pickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from lstm import _atomic
from lstm.lm.files import CheckpointError, load_tensors, read_info, read_json, save_tensors

KIND = "test-kind/1"


class Planted:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Planted(marker)))


def test_planted_pickle_would_run_if_unpickled(tmp_path: Path) -> None:
    # The control for the tests below: the planted file really is a working payload.
    marker = tmp_path / "ran"
    plant_pickle(tmp_path / "payload", marker)
    pickle.loads((tmp_path / "payload").read_bytes())  # on purpose, once: the control
    assert marker.exists()


def test_round_trip_keeps_dtypes_shapes_and_info(tmp_path: Path) -> None:
    tensors = {
        "weight": torch.randn(3, 4, dtype=torch.float64),
        "step": torch.tensor(7.0),
        "half": torch.randn(5, dtype=torch.bfloat16),
        "rng": torch.get_rng_state(),
        "minus_infinity": torch.full((2, 3), float("-inf")),
    }
    info = {"step": 7, "groups": [{"lr": 0.003, "betas": [0.9, 0.999]}]}
    save_tensors(tmp_path / "a.safetensors", tensors, kind=KIND, info=info)
    loaded, loaded_info = load_tensors(tmp_path / "a.safetensors", kind=KIND)
    assert loaded_info == info
    assert sorted(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": torch.arange(64.0).reshape(8, 8)}, kind=KIND, info={"step": 1})
    return path


def test_a_flipped_bit_in_the_data_is_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x10
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fail their SHA-256 check"):
        load_tensors(saved, kind=KIND)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_a_truncated_file_is_refused(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointError, match=str(saved)):
        load_tensors(saved, kind=KIND)


def test_another_kind_is_refused(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="expected a 'other/1' file, got kind 'test-kind/1'"):
        load_tensors(saved, kind="other/1")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tensors(tmp_path / "absent.safetensors", kind=KIND)


def test_a_planted_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    path, marker = tmp_path / "model.safetensors", tmp_path / "ran"
    plant_pickle(path, marker)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_tensors(path, kind=KIND)
    assert not marker.exists()


def test_read_json_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"run configuration .* does not exist"):
        read_json(tmp_path / "config.json", "run configuration")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        read_json(tmp_path / "config.json", "run configuration")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object, got list"):
        read_json(tmp_path / "config.json", "run configuration")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _atomic.write_text(path, "old\n")

    def half_then_fail(file: object) -> None:
        file.write(b"new, but only ha")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _atomic.atomic_write(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_written_files_get_the_umask_mode_not_a_private_one(tmp_path: Path) -> None:
    _atomic.write_json(tmp_path / "config.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_same_tensors_and_info_give_the_same_bytes(tmp_path: Path) -> None:
    # safetensors orders the metadata by a randomly seeded hash map: before the header was
    # sorted, a few saves of the same file came out in different bytes.
    tensors = {"weight": torch.arange(6.0).reshape(2, 3), "step": torch.tensor([3])}
    info = {"step": 3, "metrics": [{"step": 1, "train_bpc": 7.5}]}
    files = [tmp_path / f"{index}.safetensors" for index in range(12)]
    for path in files:
        save_tensors(path, tensors, kind=KIND, info=info)
    assert len({path.read_bytes() for path in files}) == 1
    data = files[0].read_bytes()
    length = int.from_bytes(data[:8], "little")
    assert (8 + length) % 8 == 0  # the data stays aligned
    header = data[8 : 8 + length].decode()
    assert header.index('"__metadata__"') < header.index('"step"') < header.index('"weight"')
    metadata = header[header.index('"__metadata__"') :]
    assert metadata.index('"info"') < metadata.index('"kind"') < metadata.index('"sha256"')
    loaded, loaded_info = load_tensors(files[0], kind=KIND)
    assert loaded_info == info
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())


def test_read_info_reads_the_header_alone_and_refuses_what_load_tensors_refuses(
    saved: Path, tmp_path: Path
) -> None:
    assert read_info(saved, kind=KIND) == {"step": 1}
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x10  # the tensors' bytes: load_tensors' checksum, not the header's business
    saved.write_bytes(bytes(data))
    assert read_info(saved, kind=KIND) == {"step": 1}
    with pytest.raises(CheckpointError, match="expected a 'other/1' file, got kind 'test-kind/1'"):
        read_info(saved, kind="other/1")
    for keep in (0, 5, 40):
        saved.write_bytes(bytes(data[:keep]))
        with pytest.raises(CheckpointError, match="not a safetensors file"):
            read_info(saved, kind=KIND)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_info(tmp_path / "absent.safetensors", kind=KIND)
