"""The README's main job: the demo trains and its loss falls well below chance."""

from __future__ import annotations

import pytest

from lstm import demo


def test_demo_learns(capsys: pytest.CaptureFixture[str]) -> None:
    held_out = demo.main(
        ["--steps", "60", "--hidden", "48", "--batch-size", "16", "--seq-len", "32"]
    )
    printed = capsys.readouterr().out
    assert "step   60  train loss" in printed
    assert held_out < 5.0  # uniform guessing over 256 bytes is 8 bits per byte


def test_demo_rejects_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        demo.main(["--seq-len", "1"])
    assert raised.value.code == 2
    assert "--seq-len >= 2" in capsys.readouterr().err


def test_package_bytes_is_the_sources() -> None:
    data = demo.package_bytes()
    assert data.numel() > 10_000
    assert int(data.min()) >= 0
    assert int(data.max()) < 256
