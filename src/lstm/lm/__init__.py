"""Byte-level language models: the work behind ``python -m lstm train``, ``evaluate``, ...

The commands ``train``, ``evaluate``, ``generate`` and ``compare`` of :mod:`lstm.cli` call it.

The core library (``driver.py``, ``cells/``, ``registry.py``) knows nothing of this package;
it only uses the registry to build a cell. Read it top to bottom:

* :mod:`lstm.lm.corpus` -- the bytes: the embedded default corpus, a user's file, the 90/5/5
  split and the windows of truncated backpropagation through time;
* :mod:`lstm.lm.model` -- ``embedding -> any registered cell (or torch.nn.LSTM) -> linear``;
* :mod:`lstm.lm.config` -- the dataclass written as ``config.json`` next to every run, whose
  fields are the command line's flags;
* :mod:`lstm.lm.files` -- atomic writes and safetensors files that are checked before use;
* :mod:`lstm.lm.run_folder` -- the run folder: its files, checkpoints, and the checks before a
  resume or a load;
* :mod:`lstm.lm.train` -- the training loop (one process or many) over a ``TrainingState``;
* :mod:`lstm.lm.sample` -- evaluation in bits per character and sampling;
* :mod:`lstm.lm.compare` -- LSTM against the Array-LSTM variants at one parameter budget.

It needs the ``[cli]`` extra (safetensors, tqdm, matplotlib).
"""
