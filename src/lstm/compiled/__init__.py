"""The compiled engine: any cell's step, traced, generated as C and run by a C++ time loop.

Three parts, one concern each: :mod:`lstm.compiled.trace` (which cells fit, and the
element-wise graphs of their step), :mod:`lstm.compiled.codegen` (core ATen graph -> one C
function), :mod:`lstm.compiled.build` (compiling and caching), and the fixed loop
(``loop.cpp``) with its Python side.
"""
