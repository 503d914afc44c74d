"""ONNX export of every registered cell, checked against onnxruntime.

Needs the ``[onnx]`` extra (onnx, onnxruntime, onnxscript); skipped without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from builders import NAMES, build, results

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

# The exporter reports its own progress through warnings that say nothing about our model.
pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    # Dynamo reads .grad of a non-leaf while tracing torch.lstm (torch 2.13), as in test_compile.
    pytest.mark.filterwarnings(
        "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"
    ),
    # torch.export and the ONNX exporter call their own deprecated helpers (torch 2.13:
    # torch._check_is_size, LeafSpec); these say nothing about this package's code.
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*Skipping constant folding.*"),
]


def _export(model: torch.nn.Module, x: torch.Tensor, path: Path, dynamic_seq: bool) -> None:
    dims = {0: torch.export.Dim("batch")}
    if dynamic_seq:
        dims[1] = torch.export.Dim("seq")
    program = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        dynamic_shapes=(dims,),
        input_names=["x"],
    )
    assert program is not None
    program.save(str(path))


def _check(session: ort.InferenceSession, model: torch.nn.Module, x: torch.Tensor) -> None:
    got = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected_outputs = results(*model(x))
    for actual, expected in zip(got, expected_outputs, strict=True):
        assert actual.shape == tuple(expected.shape)
        np.testing.assert_allclose(actual, expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [*NAMES, "nn-lstm"])  # nn-lstm: lstm.nn.LSTM, batch-first
def test_export_with_dynamic_shapes(name: str, tmp_path: Path) -> None:
    # Every cell: one layer, both directions, a dynamic batch, and 3 steps (a first, a middle
    # and a last step in each direction); small, since the reference path unrolls every step
    # of every cell into the graph. The LSTM runs on torch.lstm, whose loop is not unrolled:
    # its export also has two layers and a dynamic sequence length (what a separate LSTM
    # export checked once, with the same shapes).
    dynamic_seq = name in ("lstm", "nn-lstm")
    layers = 2 if dynamic_seq else 1
    model = build(name, 4, 6, dtype=torch.float32, num_layers=layers, bidirectional=True)
    path = tmp_path / f"{name}.onnx"
    _export(model, torch.randn(3, 3, 4), path, dynamic_seq=dynamic_seq)
    session = ort.InferenceSession(str(path))
    shapes = [(3, 3), (1, 3), (7, 3)] + ([(3, 5), (2, 9), (4, 1)] if dynamic_seq else [])
    for batch, seq_len in shapes:
        _check(session, model, torch.randn(batch, seq_len, 4))
