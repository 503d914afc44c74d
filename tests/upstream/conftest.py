"""The ``face`` fixture: the ports that do not touch nn.LSTM's names run on both faces."""

from __future__ import annotations

import pytest

from upstream.factory import FACES


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> str:
    """``"lstm.nn.LSTM"`` or ``"lstm.LSTM"``: what :func:`upstream.factory.make_pair` builds."""
    return str(request.param)
