"""The compiled engine: any cell's step, traced, generated as C and run by a C++ time loop.

One part, one concern per module: :mod:`lstm.compiled.trace` (whether a cell's step fits,
and its element-wise forward and backward graphs), :mod:`lstm.compiled.codegen` (a core
ATen graph as one C function over batch and lanes), :mod:`lstm.compiled.build` (compiling
and caching the kernels, building the fixed loop ``loop.cpp``) and
:mod:`lstm.compiled.run` (what is built per cell, and one direction of one layer as one
autograd node on the loop). :func:`lstm.engines.choose_engine` decides when it runs.
"""
