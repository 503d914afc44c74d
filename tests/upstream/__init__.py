"""Ports of PyTorch's own CPU tests of ``torch.nn.LSTM``, run against ``lstm.LSTM``."""
