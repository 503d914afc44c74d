"""The benchmark command: it measures, compares, writes JSON and a PNG, and refuses bad input."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from lstm import LSTM, cli, create
from lstm import bench as bench_module
from lstm.bench import (
    CANDIDATES,
    DEFAULT_SHAPES,
    FLOOR,
    SHAPES,
    Product,
    Shape,
    build_candidates,
    format_table,
    gemm_floor,
    gemm_products,
    run_benchmark,
    time_interleaved,
)

TINY = Shape(2, 6, 4, 5, "toy")  # not SHAPES["tiny"]: a few ms per test


def test_run_benchmark_measures_every_candidate_and_mode() -> None:
    results = run_benchmark(shapes=[TINY], rounds=2, min_run_time=0.01, memory=False)
    assert {(r.mode, r.candidate) for r in results} == {
        (m, c) for m in ("forward", "train") for c in CANDIDATES if c != "fused"
    }  # the stock LSTM has no fused engine: its kernel came before
    for result in results:
        assert result.median_s > 0
        assert result.measurements >= 2
        assert result.first_call_s > 0
        assert result.ratio_to_torch is not None
        assert result.ratio_to_torch > 0
    torch_rows = [r for r in results if r.candidate == "nn.LSTM"]
    assert all(r.ratio_to_torch == 1.0 for r in torch_rows)
    for result in results:  # by default only lstm is timed against its GEMM floor
        if result.candidate == "lstm":
            assert result.ratio_to_floor is not None
            assert result.ratio_to_floor > 0
            assert result.floor_median_s is not None
            assert result.floor_median_s > 0
        else:
            assert result.ratio_to_floor is None
            assert result.floor_median_s is None
    engines = {r.candidate: r.engine for r in results if r.mode == "train"}
    assert engines == {
        "lstm": "kernel",
        "lstm.nn": "kernel",
        "nn.LSTM": "nn.LSTM",
        "reference": "reference",
        "hoisted": "hoisted",
    }
    for result in results:  # every ratio divides two times of its own group
        assert result.torch_median_s is not None
        assert result.ratio_to_torch == result.median_s / result.torch_median_s
        if result.floor_median_s is not None:
            assert result.ratio_to_floor == result.median_s / result.floor_median_s
    table = format_table(results)
    header, _, *rows = table.split("\n\n")[0].splitlines()
    assert header.split() == [
        "cell",
        "shape",
        "mode",
        "candidate",
        "engine",
        "ms",
        "nn.LSTM",
        "ms",
        "/nn.LSTM",
        "/floor",
    ]
    assert len(rows) == len(results)
    ours = next(r for r in results if r.candidate == "lstm" and r.mode == "train")
    row = next(line.split() for line in rows if line.split()[2:4] == ["train", "lstm"])
    assert row == [
        "lstm",
        "toy",
        "train",
        "lstm",
        "kernel",
        f"{ours.median_s * 1e3:.2f}",
        f"{(ours.torch_median_s or 0) * 1e3:.2f}",
        f"{ours.ratio_to_torch:.2f}x",
        f"{ours.ratio_to_floor:.2f}x",
    ]
    assert "floor ms" not in table
    assert "floor ms" in format_table(results, wide=True)
    assert "  lstm train lstm: kernel -- LSTM's own step: torch.lstm" in table
    assert "  lstm train lstm.nn: kernel -- LSTM's own step: torch.lstm" in table
    assert "no gate permutation" in table
    assert max(len(line) for line in table.splitlines()) <= 100


@pytest.mark.parametrize("num_layers", [1, 2])
def test_candidates_compute_the_same_function(num_layers: int) -> None:
    shape = Shape(2, 6, 4, 5, num_layers=num_layers)
    modules = build_candidates("lstm", shape, torch.float64)
    x = torch.randn(shape.batch, shape.seq_len, shape.input_size, dtype=torch.float64)
    outputs = [module(x)[0] for module in modules.values()]
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=0, atol=1e-10)
    assert modules["reference"].engine == "reference"
    assert {name: module.num_layers for name, module in modules.items()} == dict.fromkeys(
        [name for name in CANDIDATES if name != "fused"], num_layers
    )


def test_a_family_with_a_step_rule_is_also_timed_on_the_fused_engine() -> None:
    """The compiled engine's before (the fused engine) beside its after (``lstm``)."""
    shape = Shape(2, 6, 4, 5, num_layers=2)
    modules = build_candidates("cifg", shape, torch.float64)
    assert list(modules) == [name for name in CANDIDATES if name != "lstm.nn"]
    x = torch.randn(shape.batch, shape.seq_len, shape.input_size, dtype=torch.float64)
    assert modules["lstm"].engine_for(x).name == "compiled"
    assert modules["fused"].engine_for(x).name == "fused"
    torch.testing.assert_close(modules["fused"](x)[0], modules["lstm"](x)[0], rtol=0, atol=1e-12)


def test_other_cells_are_built_with_the_layers_of_the_shape() -> None:
    modules = build_candidates("cifg", Shape(2, 3, 4, 5, num_layers=3), torch.float32)
    assert "lstm.nn" not in modules  # nn.LSTM's face is the stock LSTM's alone
    assert modules["lstm"].num_layers == 3
    assert isinstance(modules["nn.LSTM"], nn.LSTM)
    assert modules["nn.LSTM"].num_layers == 3


def test_memory_probe_reports_a_positive_peak() -> None:
    results = run_benchmark(
        shapes=[Shape(16, 20, 32, 64, num_layers=2)],  # the probe rebuilds the layers too
        modes=["train"],
        rounds=1,
        min_run_time=0.01,
        reference=False,
    )
    peaks = {r.candidate: r.peak_memory_bytes for r in results}
    assert set(peaks) == {"lstm", "lstm.nn", "nn.LSTM"}
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
    assert {r["candidate"] for r in payload["results"]} == set(CANDIDATES) - {"fused"}
    assert payload["config"]["shape"] == [
        {"batch": 2, "seq_len": 5, "input_size": 3, "hidden_size": 4, "label": "", "num_layers": 1}
    ]
    floors = {r["candidate"]: r["ratio_to_floor"] for r in payload["results"]}
    assert floors["lstm"] > 0
    assert floors["nn.LSTM"] is None
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2x5x3x4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--shape", "2,5,3"], "or 4 or 5 comma-separated integers"),
        (["bench", "--shape", "2,0,3,4"], "expected every size of a shape >= 1, got seq_len=0"),
        (["bench", "--shape", "huge"], "expected a shape name (tiny, small, medium, large)"),
        (["bench", "--floor-for", "gru"], "invalid choice: 'gru'"),
        (["bench", "--cell", "gru"], "argument --cell: unknown cell 'gru'; expected one of"),
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


# ------------------------------------------------------------------ shapes by name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tiny", Shape(32, 10, 1, 64, "tiny", num_layers=2)),
        ("small", Shape(8, 200, 64, 64, "small")),
        (" Medium ", Shape(64, 100, 256, 256, "medium")),
        ("large", Shape(32, 50, 512, 512, "large")),
        ("2,5,3,4", Shape(2, 5, 3, 4)),
        (" 2, 5,3 ,4", Shape(2, 5, 3, 4)),
        ("2,5,3,4,3", Shape(2, 5, 3, 4, num_layers=3)),
        ("2,5,3,4,1", Shape(2, 5, 3, 4)),
    ],
)
def test_shape_parses_names_and_sizes(text: str, expected: Shape) -> None:
    assert Shape.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2,5,3", "or 4 or 5 comma-separated integers 'batch,seq_len,input,hidden[,layers]', "),
        ("2,5,3,4,1,1", "got '2,5,3,4,1,1'"),
        ("2,-1,3,4", "got '2,-1,3,4'"),
        ("2,5.0,3,4", "got '2,5.0,3,4'"),
        ("\u00b2,5,3,4", "got '\u00b2,5,3,4'"),  # a superscript two is a digit to isdigit()
        ("", "expected a shape name (tiny, small, medium, large) or 4 or 5"),
        ("huge", "got 'huge'"),
        ("2,0,3,0", "expected every size of a shape >= 1, got seq_len=0, hidden_size=0 in"),
        ("2,5,3,4,0", "got num_layers=0 in '2,5,3,4,0'"),
    ],
)
def test_shape_parse_names_what_it_expected_and_got(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Shape.parse(text)


def test_shape_names_and_the_default_shapes() -> None:
    assert Shape(2, 5, 3, 4).name == "2x5x3x4"
    assert Shape(2, 5, 3, 4, num_layers=2).name == "2x5x3x4 L2"
    assert Shape(2, 5, 3, 4, "mine", num_layers=2).name == "mine"
    assert [Shape.parse(shape.sizes) for shape in SHAPES.values()] == [
        Shape(s.batch, s.seq_len, s.input_size, s.hidden_size, num_layers=s.num_layers)
        for s in SHAPES.values()
    ]
    assert [shape.name for shape in DEFAULT_SHAPES] == ["tiny", "small", "medium", "large"]
    assert SHAPES["tiny"].num_layers == 2


def test_help_lists_the_shape_names_and_defines_the_floor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "--help"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "tiny (32,10,1,64, 2 layers: DeepLog-sized)" in printed
    assert "medium (64,100,256,256)" in printed
    assert "GEMM floor (the lstm/floor column): the same matrix products" in printed
    assert "with the same --threads" in printed


# ------------------------------------------------------------------ the GEMM floor


def _listed(products: list[Product]) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    return [(p.left, p.right, p.count) for p in products]


def test_the_lstm_floor_is_its_input_map_and_one_recurrent_product_per_step() -> None:
    batch, steps, inputs, hidden = 3, 7, 5, 4
    shape = Shape(batch, steps, inputs, hidden)
    model = LSTM(inputs, hidden)
    rows, gates = batch * steps, 4 * hidden
    forward = [((rows, inputs), (inputs, gates), 1), ((batch, hidden), (hidden, gates), steps)]
    assert _listed(gemm_products(model, shape, "forward")) == forward
    assert _listed(gemm_products(model, shape, "train")) == [
        *forward,
        ((rows, gates), (gates, inputs), 1),  # i2h: input gradient
        ((gates, rows), (rows, inputs), 1),  # i2h: weight gradient
        ((gates, rows), (rows, hidden), 1),  # h2h: weight gradient
        ((batch, gates), (gates, hidden), steps),  # h2h: recurrent gradient, per step
    ]
    parts = [p.part for p in gemm_products(model, shape, "train")]
    assert parts[0] == "cell (0, 0) i2h: input map"
    assert parts[-1] == "cell (0, 0) h2h: recurrent gradient"
    # torch's module is read as the same LSTM
    assert gemm_products(model.to_torch(), shape, "train") == gemm_products(model, shape, "train")


def test_the_array_lstm_floor_has_its_k_lanes_in_every_product() -> None:
    batch, steps, inputs, hidden, k = 2, 3, 5, 4, 4
    model = create("array", inputs, hidden, k=k)
    rows, width = batch * steps, 4 * hidden * k  # i2h and h2h map to 4Hk = 64 features
    assert _listed(gemm_products(model, Shape(batch, steps, inputs, hidden), "train")) == [
        ((rows, inputs), (inputs, width), 1),
        ((batch, hidden), (hidden, width), steps),
        ((rows, width), (width, inputs), 1),
        ((width, rows), (rows, inputs), 1),
        ((width, rows), (rows, hidden), 1),
        ((batch, width), (width, hidden), steps),
    ]


def test_a_stacked_bidirectional_floor_sums_every_cell() -> None:
    batch, steps, inputs, hidden = 2, 3, 5, 4
    model = LSTM(inputs, hidden, num_layers=2, bidirectional=True)
    shape = Shape(batch, steps, inputs, hidden)
    rows, gates = batch * steps, 4 * hidden
    forward = gemm_products(model, shape, "forward")
    assert len(forward) == 8  # 4 cells x (i2h, h2h)
    for layer, fan_in in ((0, inputs), (1, 2 * hidden)):  # layer 1 reads both directions
        for direction in (0, 1):
            cell = [p for p in forward if p.part.startswith(f"cell ({layer}, {direction}) ")]
            assert _listed(cell) == [
                ((rows, fan_in), (fan_in, gates), 1),
                ((batch, hidden), (hidden, gates), steps),
            ]
    train = gemm_products(model, shape, "train")
    assert len(train) == 8 + 4 * 4
    assert train[:8] == forward
    assert sum(p.count for p in train) == 4 * (1 + steps + 3 + steps)
    assert ((rows, gates), (gates, 2 * hidden), 1) in _listed(train)  # layer 1's input gradient


def test_parts_that_are_not_linear_add_no_product_and_a_projection_does() -> None:
    shape = Shape(2, 3, 5, 4)
    lstm_products = _listed(gemm_products(LSTM(5, 4), shape, "train"))
    for name in ("peephole", "layernorm", "slstm"):  # a parameter vector, LayerNorms, none
        assert _listed(gemm_products(create(name, 5, 4), shape, "train")) == lstm_products
    projected = gemm_products(LSTM(5, 4, proj_size=2), shape, "forward")
    assert [(p.part, p.left, p.right, p.count) for p in projected] == [
        ("cell (0, 0) i2h: input map", (6, 5), (5, 16), 1),
        ("cell (0, 0) h2h: recurrent map", (2, 2), (2, 16), 3),  # reads the projected hidden
        ("cell (0, 0) h2p: recurrent map", (2, 4), (4, 2), 3),
    ]


def test_the_floor_runs_exactly_the_listed_products_with_plain_mm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = LSTM(5, 4, num_layers=2, dtype=torch.float64)
    shape = Shape(2, 3, 5, 4)
    floor = gemm_floor(model, shape, "train")
    seen: Counter[tuple[tuple[int, ...], tuple[int, ...], torch.dtype, bool]] = Counter()
    real_mm = torch.mm

    def mm(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        seen[(tuple(left.shape), tuple(right.shape), left.dtype, left.requires_grad)] += 1
        return real_mm(left, right)

    monkeypatch.setattr(torch, "mm", mm)
    floor()
    expected: Counter[tuple[tuple[int, ...], tuple[int, ...], torch.dtype, bool]] = Counter()
    for product in gemm_products(model, shape, "train"):
        expected[(product.left, product.right, torch.float64, False)] += product.count
    assert seen == expected
    assert sum(seen.values()) == 2 * (1 + 3 + 3 + 3)


def test_floor_errors_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"expected mode in \('forward', 'train'\), got 'eval'"):
        gemm_products(LSTM(3, 4), Shape(2, 3, 3, 4), "eval")
    with pytest.raises(TypeError, match=r"expected an lstm\.driver\.Recurrent .*, got GRU"):
        gemm_products(nn.GRU(3, 4), Shape(2, 3, 3, 4), "forward")
    with pytest.raises(ValueError, match=r"expected the inner sizes .* agree, got 3 and 4"):
        Product("x", (2, 3), (4, 5), 1)
    with pytest.raises(ValueError, match=r"expected floor_for names among .*, got \['gru'\]"):
        run_benchmark(floor_for=["gru"])
    assert Product("x", (2, 3), (3, 5), 7).flops == 2 * 2 * 3 * 5 * 7


# ------------------------------------------------------------------ threads and the floor pair


def test_timed_steps_run_on_the_threads_asked_for() -> None:
    seen: dict[str, set[int]] = {"cell": set(), FLOOR: set()}

    def recorder(name: str) -> Callable[[], None]:
        return lambda: seen[name].add(torch.get_num_threads())

    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1  # differ from the process's own setting
    time_interleaved({"cell": recorder("cell"), FLOOR: recorder(FLOOR)}, 2, 0.001, wanted)
    assert seen == {"cell": {wanted}, FLOOR: {wanted}}
    assert torch.get_num_threads() == before


def test_the_floor_pair_gets_the_threads_of_the_nn_lstm_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[tuple[str, ...], int]] = []
    real = bench_module.time_interleaved

    def recording(
        steps: dict[str, Callable[[], None]], rounds: int, min_run_time: float, threads: int
    ) -> dict[str, list[float]]:
        calls.append((tuple(steps), threads))
        return real(steps, rounds, min_run_time, threads)

    monkeypatch.setattr(bench_module, "time_interleaved", recording)
    run_benchmark(
        shapes=[Shape(2, 3, 2, 3)],
        modes=["forward"],
        rounds=1,
        min_run_time=0.001,
        threads=3,
        memory=False,
        reference=False,
    )
    # lstm with nn.LSTM and its floor in one group; lstm.nn with nn.LSTM; all on 3 threads
    assert calls == [(("lstm", "nn.LSTM", FLOOR), 3), (("lstm.nn", "nn.LSTM"), 3)]


def test_every_cell_gets_a_finite_ratio_to_its_floor() -> None:
    results = run_benchmark(
        cells=["lstm", "cifg"],
        shapes=[Shape(2, 4, 3, 4, num_layers=2)],
        rounds=1,
        min_run_time=0.001,
        memory=False,
        reference=False,
        floor_for=["lstm", "lstm.nn", "fused", "nn.LSTM"],
    )
    assert {(r.cell, r.mode, r.candidate) for r in results} == {
        (cell, mode, name)
        for cell in ("lstm", "cifg")
        for mode in ("forward", "train")
        for name in ("lstm", "lstm.nn", "fused", "nn.LSTM")
        if (name != "lstm.nn" or cell == "lstm") and (name != "fused" or cell == "cifg")
    }
    modules = build_candidates("lstm", Shape(2, 4, 3, 4, num_layers=2), torch.float32)
    for mode in ("forward", "train"):  # nn.LSTM's face has the same products as lstm's
        products = gemm_products(modules["lstm.nn"], Shape(2, 4, 3, 4), mode)
        assert products == gemm_products(modules["lstm"], Shape(2, 4, 3, 4), mode)
        assert len(products) == (4 if mode == "forward" else 12)
    for result in results:
        assert result.ratio_to_floor is not None
        assert math.isfinite(result.ratio_to_floor)
        assert result.ratio_to_floor > 0
        assert result.num_layers == 2
    table = format_table(results)
    floors = [line.split()[-1] for line in table.split("\n\n")[0].splitlines()[2:]]
    assert len(floors) == len(results)
    assert all(floor.endswith("x") for floor in floors)


# ------------------------------------------------------------------ as a person uses it


def test_a_line_per_finished_group_with_the_time_left_and_no_file_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--shape", "2,5,3,4", "--shape", "2,3,3,4", "--rounds", "1"]
    argv += ["--min-run-time", "0.01", "--no-memory", "--no-reference"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert len(progress) == 4  # two shapes x two modes
    assert re.fullmatch(
        r"\[1/4\] lstm 2x5x3x4 forward: lstm \d+\.\d\d ms \(\d+\.\d\dx nn\.LSTM, kernel\); "
        r"about \d+ s left",
        progress[0],
    ), progress[0]
    assert progress[-1].endswith("; done")
    assert list(tmp_path.iterdir()) == []  # no bench.json: files only where --json says
    assert "wrote" not in captured.out


def test_every_step_and_floor_is_warmed_up_before_timing() -> None:
    calls: Counter[str] = Counter()

    def counting(name: str) -> Callable[[], None]:
        def step() -> None:
            calls[name] += 1

        return step

    first = bench_module._first_calls(
        {"lstm": counting("lstm"), "nn.LSTM": counting("nn.LSTM")},
        {"lstm": counting("floor")},
        min_run_time=0.05,
    )
    assert set(first) == {"lstm", "nn.LSTM"}
    assert min(calls.values()) >= 3  # the first call, then at least two more


def test_ctrl_c_keeps_and_writes_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    argv = [sys.executable, "-m", "lstm", "bench", "--shape", "2,5,3,4", "--shape", "small"]
    argv += ["--mode", "forward", "--rounds", "2", "--min-run-time", "0.05", "--no-memory"]
    argv += ["--json", str(out)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the first group done, stop in the middle of the next
        if line.startswith("[1/"):
            break
    process.send_signal(signal.SIGINT)
    printed, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert "interrupted: keeping the" in error
    kept = json.loads(out.read_text())["results"]
    assert {(r["shape"], r["mode"]) for r in kept} == {("2x5x3x4", "forward")}
    assert "2x5x3x4 forward" in printed


def test_the_chart_keeps_the_table_s_order() -> None:
    results = run_benchmark(
        shapes=[Shape(2, 5, 3, 4), Shape(2, 3, 3, 4)],
        rounds=1,
        min_run_time=0.001,
        memory=False,
        reference=False,
    )
    rows = format_table(results).split("\n\n")[0].splitlines()[2:]
    in_table = list(dict.fromkeys(tuple(line.split()[:3]) for line in rows))
    assert bench_module.chart_groups(results) == in_table
    assert in_table[0] == ("lstm", "2x5x3x4", "forward")  # as measured, not sorted
