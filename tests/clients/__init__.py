"""Models written by users of ``torch.nn.LSTM``, run unchanged but for one import."""
