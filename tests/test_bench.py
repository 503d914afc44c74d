"""The benchmark command: it measures, compares, writes JSON and a PNG, and refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lstm import cli
from lstm.bench import CANDIDATES, Shape, build_candidates, format_table, run_benchmark

TINY = Shape(2, 6, 4, 5, "tiny")


def test_run_benchmark_measures_every_candidate_and_mode() -> None:
    results = run_benchmark(shapes=[TINY], rounds=2, min_run_time=0.01, memory=False)
    assert {(r.mode, r.candidate) for r in results} == {
        (m, c) for m in ("forward", "train") for c in CANDIDATES
    }
    for result in results:
        assert result.median_s > 0
        assert result.measurements >= 2
        assert result.first_call_s > 0
        assert result.ratio_to_torch is not None
        assert result.ratio_to_torch > 0
    torch_rows = [r for r in results if r.candidate == "nn.LSTM"]
    assert all(r.ratio_to_torch == 1.0 for r in torch_rows)
    engines = {r.candidate: r.engine for r in results if r.mode == "train"}
    assert engines == {
        "lstm": "kernel",
        "nn.LSTM": "nn.LSTM",
        "reference": "reference",
        "hoisted": "hoisted",
    }
    table = format_table(results)
    assert "tiny" in table
    assert "lstm/torch" in table
    assert "  lstm train: kernel -- LSTM's own step: torch.lstm" in table


def test_candidates_compute_the_same_function() -> None:
    import torch

    modules = build_candidates("lstm", TINY, torch.float64)
    x = torch.randn(TINY.batch, TINY.seq_len, TINY.input_size, dtype=torch.float64)
    outputs = [modules[name](x)[0] for name in CANDIDATES]
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=0, atol=1e-10)
    assert modules["reference"].engine == "reference"


def test_memory_probe_reports_a_positive_peak() -> None:
    results = run_benchmark(
        shapes=[Shape(16, 20, 32, 64)],
        modes=["train"],
        rounds=1,
        min_run_time=0.01,
        reference=False,
    )
    peaks = {r.candidate: r.peak_memory_bytes for r in results}
    assert set(peaks) == {"lstm", "nn.LSTM"}
    for peak in peaks.values():
        assert peak is not None
        assert peak > 0


def test_command_line_writes_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "bench.json", tmp_path / "chart.png"
    status = cli.main(
        [
            "bench",
            "--shape",
            "2,5,3,4",
            "--rounds",
            "1",
            "--min-run-time",
            "0.01",
            "--no-memory",
            "--mode",
            "forward",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    assert status == 0
    payload = json.loads(out_json.read_text())
    assert payload["machine"]["torch"]
    assert {r["candidate"] for r in payload["results"]} == set(CANDIDATES)
    assert payload["config"]["shape"] == [
        {"batch": 2, "seq_len": 5, "input_size": 3, "hidden_size": 4, "label": ""}
    ]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2x5x3x4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--shape", "2,5,3"], "expected a shape as four positive integers"),
        (["bench", "--shape", "2,0,3,4"], "expected every size of a shape >= 1"),
        (["bench", "--cell", "gru"], "invalid choice: 'gru'"),
    ],
)
def test_command_line_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.splitlines()) == 1, error


def test_command_line_rejects_bad_values_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "--rounds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m lstm bench: error: expected --rounds >= 1")
    assert "Traceback" not in err
