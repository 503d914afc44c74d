"""Building the compiled engine: the generated kernels (plain C) and the fixed loop (C++).

Generated kernels are compiled with the system's C compiler into shared objects, one per
kernel, cached on disk by a hash of their source, the compiler flags, the torch version and
the machine's CPU (:func:`kernel_library`): a kernel is compiled once per machine (about
0.1-0.3 s) and loaded by every later process. The time loop (``loop.cpp``, ATen's public
API) is a torch C++ extension built once per machine by :mod:`torch.utils.cpp_extension`
(:func:`loop_extension`). Each build raises :class:`BuildError` with one line saying what
failed; the engine then runs the Python engines and ``engine_for`` says why.

Nothing here changes the process's floating-point state: no object is linked with
``-ffast-math`` (which would switch flush-to-zero on for the whole process); the loop sets
flush-to-zero and denormals-are-zero around itself only, and restores them.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from lstm.compiled.codegen import Kernel

_LOCK = threading.Lock()

CFLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c11")
CFLAGS += ("-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math")
"""The generated kernels' flags: vectorised unit loops (``#pragma omp simd``), no errno and
no trapping assumptions so that math calls and selects vectorise; never ``-ffast-math``."""

VECTOR_MATH = {
    "float": ("expf", "logf", "tanhf", "expm1f", "log1pf", "erff", "sinf", "cosf", "powf"),
    "double": ("exp", "log", "tanh", "expm1", "log1p", "erf", "sin", "cos", "pow"),
}
"""Functions declared SIMD for glibc's vector math library (libmvec) where it has them."""


class BuildError(RuntimeError):
    """A build of the compiled engine failed; the message says what to do about it."""


def cache_dir() -> Path:
    """Where built kernels and the loop live: ``$LSTM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pure-lstm`` (``~/.cache/pure-lstm``)."""
    explicit = os.environ.get("LSTM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pure-lstm"


@functools.lru_cache(maxsize=1)
def compiler() -> str:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH.

    Raises
    ------
    BuildError
        If there is none.
    """
    candidates = [os.environ.get("CC"), "cc", "gcc", "clang"]
    for candidate in candidates:
        if candidate and shutil.which(candidate):
            return candidate
    raise BuildError("no C compiler found (set CC, or install gcc): the compiled engine needs one")


@functools.lru_cache(maxsize=1)
def machine() -> str:
    """What a built object depends on besides its source: CPU, compiler, torch, Python."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        flags = platform.processor()
    return "|".join((platform.machine(), flags, torch.__version__, sys.version, compiler()))


@functools.lru_cache(maxsize=2)
def vector_math(scalar: str) -> tuple[str, ...]:
    """The functions of :data:`VECTOR_MATH` this machine's libmvec vectorises (may be none)."""
    if not sys.platform.startswith("linux"):
        return ()
    names = VECTOR_MATH[scalar]
    for chosen in (names, names[:2]):
        calls = {n: f"{n}(x[i], x[i])" if n.startswith("pow") else f"{n}(x[i])" for n in chosen}
        source = _declarations(scalar, chosen) + "".join(
            f"void probe_{n}(long k, {scalar}* x) {{\n#pragma omp simd\n"
            f"for (long i = 0; i < k; ++i) x[i] = {call};\n}}\n"
            for n, call in calls.items()
        )
        try:
            _compile(source, ("-lmvec", "-lm"), "probe")
        except BuildError:
            continue
        return chosen
    return ()


def _declarations(scalar: str, names: tuple[str, ...]) -> str:
    lines = ["#include <math.h>"]
    for name in names:
        arguments = f"{scalar}, {scalar}" if name.startswith("pow") else scalar
        lines.append(f"#pragma omp declare simd notinbranch\nextern {scalar} {name}({arguments});")
    return "\n".join(lines) + "\n"


def _compile(source: str, libraries: tuple[str, ...], stem: str) -> Path:
    """Compile ``source`` into a shared object in the cache (once per source and machine)."""
    flags = (*CFLAGS, *libraries)
    digest = hashlib.sha256("\n".join((source, " ".join(flags), machine())).encode()).hexdigest()
    folder = cache_dir() / "kernels"
    target = folder / f"{stem}-{digest[:24]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        c_file = Path(scratch) / f"{stem}.c"
        c_file.write_text(source)
        built = Path(scratch) / f"{stem}.so"
        command = [compiler(), *CFLAGS, str(c_file), "-o", str(built), *libraries]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            errors = [line for line in completed.stderr.splitlines() if "error" in line]
            first = (errors or completed.stderr.strip().splitlines() or ["no message"])[0]
            raise BuildError(
                f"compiling a generated kernel failed ({command[0]}): {first.strip()[:300]}"
            )
        os.replace(built, target)  # atomic: another process may be building the same one
    COMPILED.append(target)
    return target


COMPILED: list[Path] = []
"""The shared objects this process compiled (the rest came from the cache), in order."""


def unvectorised_loops(kernel: Kernel, scalar: str) -> list[int] | None:
    """The unit loops of ``kernel`` that the compiler did not vectorise (their lines in its
    source), or None where the compiler cannot say (only gcc's ``-fopt-info`` is read).

    A unit loop that is not vectorised calls the scalar exp and tanh: the step is then
    several times slower (a NaN-propagating max written one way once cost 9x).
    """
    version = subprocess.run(
        [compiler(), "--version"], capture_output=True, text=True, check=False
    ).stdout
    if "clang" in version.lower() or "Free Software Foundation" not in version:
        return None  # not gcc (cc is often gcc: its banner names the FSF)
    vectorised = vector_math(scalar)
    header = _declarations(scalar, vectorised) if vectorised else ""
    source = header + kernel.source
    lines = source.splitlines()
    loops = [
        number + 2  # 1-based line of the loop under the pragma
        for number, line in enumerate(lines[:-1])
        if line.strip().startswith("#pragma omp simd")
        and lines[number + 1].strip().startswith("for")
    ]
    libraries = ("-lmvec", "-lm") if vectorised else ("-lm",)
    with tempfile.TemporaryDirectory() as scratch:
        c_file = Path(scratch) / "kernel.c"
        c_file.write_text(source)
        command = [compiler(), *CFLAGS, "-fopt-info-vec-optimized", str(c_file)]
        command += ["-o", str(Path(scratch) / "kernel.so"), *libraries]
        report = subprocess.run(command, capture_output=True, text=True, check=False).stderr
    done = [
        int(found)
        for found in re.findall(r"kernel\.c:(\d+):\d+: optimized: loop vectorized", report)
    ]
    # gcc names a loop by its first statement's line: within a few lines of its `for`
    return [loop for loop in loops if not any(loop <= line <= loop + 3 for line in done)]


class LoadedKernel:
    """A compiled kernel, loaded: its function pointer, and a call for tests and tools."""

    def __init__(self, kernel: Kernel, library: Path) -> None:
        self.kernel = kernel
        self._library = ctypes.CDLL(str(library))
        function = getattr(self._library, kernel.name)
        function.restype = None
        function.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        self._function = function
        self.pointer = ctypes.cast(function, ctypes.c_void_p).value or 0

    def __call__(
        self, batch: int, tensors: list[torch.Tensor], rows: torch.Tensor | None = None
    ) -> None:
        """Run the kernel on contiguous CPU tensors: its inputs, then its (non-None) outputs."""
        pointers = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
        row_pointer = None if rows is None else rows.data_ptr()
        self._function(batch, row_pointer, pointers)


def kernel_library(kernel: Kernel, scalar: str) -> LoadedKernel:
    """Compile (or find in the cache) and load ``kernel``.

    Raises
    ------
    BuildError
        If there is no compiler or the compilation fails.
    """
    with _LOCK:
        vectorised = vector_math(scalar)
        header = _declarations(scalar, vectorised) if vectorised else ""
        libraries = ("-lmvec", "-lm") if vectorised else ("-lm",)
        library = _compile(header + kernel.source, libraries, kernel.name)
        return LoadedKernel(kernel, library)


def loop_extension() -> Any:
    """The time loop, built once per machine (``loop.cpp``, a torch C++ extension), and
    loaded once per process. A build prints one line to stderr, with the time it took.

    Raises
    ------
    BuildError
        If the build fails (no compiler, no ninja, headers missing); the message says which.
        A failure is remembered: later calls in the process raise it again at once.
    """
    with _LOOP_LOCK:
        failed = _LOOP.get("error")
        if isinstance(failed, BuildError):
            raise failed
        if "module" not in _LOOP:
            try:
                _LOOP["module"] = _build_loop()
            except BuildError as error:
                _LOOP["error"] = error
                raise
        return _LOOP["module"]


_LOOP: dict[str, Any] = {}
_LOOP_LOCK = threading.Lock()


def _build_loop() -> Any:
    from torch.utils import cpp_extension

    source = Path(__file__).with_name("loop.cpp")
    if not source.is_file():
        raise BuildError(f"the compiled engine's loop source is missing ({source})")
    digest = hashlib.sha256((source.read_text() + machine()).encode()).hexdigest()[:16]
    folder = cache_dir() / "loop" / digest
    name = f"lstm_compiled_loop_{digest}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BuildError(f"cannot create the build cache {folder}: {error}") from None
    fresh = not (folder / f"{name}.so").exists()
    if fresh:  # the one line a user sees, once per machine (and per torch version)
        print(
            "lstm: building the compiled engine's time loop for this machine, once "
            f"(about 30 s; cached in {folder}) ...",
            end="",
            file=sys.stderr,
            flush=True,
        )
    started = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=name,
            sources=[str(source)],
            extra_cflags=["-O3"],
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as error:  # a failed build of any kind becomes one line
        if fresh:
            print(" failed", file=sys.stderr, flush=True)
        message = f"building the compiled engine's loop failed: {_first_error(error)}"
        raise BuildError(message) from None
    if fresh:
        print(f" done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return module


def _first_error(error: Exception) -> str:
    """The line of a build's output that says what went wrong (the compiler's first error,
    else the last line)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() and not line.startswith(("Traceback", "raise ")):
            return line[:300]
    return lines[-1][:300] if lines else type(error).__name__
