"""The bytes: the embedded default corpus, user files, the 90/5/5 split and TBPTT windows."""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import pytest
import torch

from lstm.lm import corpus
from lstm.lm.corpus import (
    SKIPPED_FOLDERS,
    Streams,
    check_size,
    corpus_files,
    default_corpus,
    minimum_bytes,
    read_corpus,
    split,
)


def test_default_corpus_is_the_head_of_the_shuffled_stdlib() -> None:
    first, second = default_corpus(), default_corpus()
    assert first.data.numel() == corpus.DEFAULT_CORPUS_BYTES
    assert torch.equal(first.data, second.data)  # deterministic
    assert first.sha256 == second.sha256
    root = Path(sysconfig.get_paths()["stdlib"])
    files = corpus_files(root)
    expected = b"".join(path.read_bytes() for path in files[:40])
    head = first.data[: min(len(expected), 100_000)].numpy().tobytes()
    assert head == expected[: len(head)]
    assert first.sha256 == hashlib.sha256(first.data.numpy().tobytes()).hexdigest()


def test_corpus_files_are_shuffled_by_path_digest_and_skip_tests_and_site_packages() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = corpus_files(root)
    names = [path.relative_to(root).as_posix() for path in files]
    assert names != sorted(names)
    digests = [hashlib.sha256(name.encode()).hexdigest() for name in names]
    assert digests == sorted(digests)  # a digest, not the per-process salted hash()
    assert len(set(names)) == len(names)
    assert all(path.suffix == ".py" for path in files)
    assert not any(SKIPPED_FOLDERS.intersection(Path(name).parts[:-1]) for name in names)
    assert len(files) > 100


def test_corpus_file_order_is_the_path_digest_order(tmp_path: Path) -> None:
    names = ["a.py", "b.py", "pkg/c.py", "pkg/sub/d.py", "z.py"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("skipped")
    (tmp_path / "notes.txt").write_text("not python")
    files = [path.relative_to(tmp_path).as_posix() for path in corpus_files(tmp_path)]
    expected = sorted(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    assert files == expected  # known digests: 5 files in a fixed, non-alphabetical order
    assert files == ["pkg/sub/d.py", "b.py", "pkg/c.py", "z.py", "a.py"]


def test_every_split_of_the_default_corpus_draws_on_the_whole_alphabet() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    alphabetical = sorted(path.relative_to(root).as_posix() for path in corpus_files(root))
    rank = {name: index / len(alphabetical) for index, name in enumerate(alphabetical)}
    total = corpus.DEFAULT_CORPUS_BYTES
    parts = split(torch.empty(total, dtype=torch.uint8))
    sizes = [parts.train.numel(), parts.validation.numel(), parts.test.numel()]
    bounds = [0, sizes[0], sizes[0] + sizes[1], total]
    ranks: list[list[float]] = [[], [], []]
    offset = 0
    for path in corpus_files(root):
        if offset >= total:
            break
        end = offset + path.stat().st_size
        for part in range(3):  # every split the file's bytes fall in
            if offset < bounds[part + 1] and end > bounds[part]:
                ranks[part].append(rank[path.relative_to(root).as_posix()])
        offset = end
    for part_ranks in ranks:  # sorted by path, validation and test were all encodings/cp8*
        assert len(part_ranks) >= 3
        assert min(part_ranks) < 0.4
        assert max(part_ranks) > 0.6


def test_a_too_small_stdlib_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "corpus_files", lambda root: [])
    with pytest.raises(ValueError, match="holds 0 bytes of Python source, expected at least"):
        default_corpus()


def test_read_corpus_takes_bytes_as_they_are(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 3
    (tmp_path / "data.bin").write_bytes(raw)
    loaded = read_corpus(tmp_path / "data.bin")
    assert loaded.data.numpy().tobytes() == raw
    assert loaded.data.dtype == torch.uint8
    assert loaded.description == f"768 bytes of {tmp_path / 'data.bin'}"


def test_read_corpus_refuses_missing_empty_folder_and_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus(tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="is not a regular file"):
        read_corpus(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "locked.txt").write_bytes(b"x")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod cannot lock root out
    with pytest.raises(ValueError, match=r"cannot be read \(Permission denied\)"):
        read_corpus(tmp_path / "locked.txt")


def test_split_is_90_5_5_contiguous() -> None:
    data = torch.arange(1000) % 256
    parts = split(data)
    assert (parts.train.numel(), parts.validation.numel(), parts.test.numel()) == (900, 50, 50)
    assert torch.equal(torch.cat([parts.train, parts.validation, parts.test]), data)


@pytest.mark.parametrize(("total", "sizes"), [(2644, (2379, 132, 132)), (59, (53, 2, 2))])
def test_split_gives_validation_and_test_the_same_size(total: int, sizes: tuple[int, ...]) -> None:
    data = torch.arange(total) % 256
    parts = split(data)
    assert (parts.train.numel(), parts.validation.numel(), parts.test.numel()) == sizes
    used = torch.cat([parts.train, parts.validation, parts.test])
    assert torch.equal(used, data[: sum(sizes)])  # in order; the 0-2 bytes left over unused


@pytest.mark.parametrize(("seq_len", "streams"), [(2, 1), (8, 2), (100, 32), (7, 5)])
def test_minimum_bytes_is_the_exact_threshold(seq_len: int, streams: int) -> None:
    needed = minimum_bytes(seq_len, streams)
    data = torch.zeros(needed, dtype=torch.uint8)
    made = corpus.Corpus(data, "x", "x", "0")
    check_size(made, seq_len, streams)
    Streams(split(data).train, streams, seq_len)  # the training windows exist
    short = corpus.Corpus(data[:-1], "x", f"{needed - 1} bytes", "0")
    with pytest.raises(ValueError, match=f"needs at least {needed:,} bytes"):
        check_size(short, seq_len, streams)


def test_streams_read_consecutive_windows_and_targets_are_shifted() -> None:
    data = torch.arange(101, dtype=torch.uint8)  # 100 predictions in 4 streams of 25
    streams = Streams(data, streams=4, seq_len=10)
    assert streams.windows == 2
    inputs, targets = streams.window(1, slice(0, 4))
    assert inputs.shape == targets.shape == (4, 10)
    assert inputs.dtype == torch.int64
    assert torch.equal(inputs[:, 0], torch.tensor([0, 25, 50, 75]))
    assert torch.equal(targets, inputs + 1)
    second, _ = streams.window(2, slice(0, 4))
    assert torch.equal(second[:, 0], inputs[:, -1] + 1)  # the next window goes on where one ends
    third, _ = streams.window(3, slice(2, 4))  # a new pass, rows of one process
    assert torch.equal(third, inputs[2:4])
    assert [streams.starts_pass(step) for step in (1, 2, 3, 4, 5)] == [1, 0, 1, 0, 1]


def test_streams_refuse_too_little_data() -> None:
    with pytest.raises(ValueError, match="expected at least 41 bytes for 4 stream"):
        Streams(torch.zeros(40, dtype=torch.uint8), streams=4, seq_len=10)


def test_stream_views_cut_rows_and_drop_the_remainder() -> None:
    inputs, targets = corpus.stream_views(torch.arange(12, dtype=torch.uint8), streams=3)
    assert inputs.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # 11 predictions: 2 unused
    assert targets.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
