"""JAX's persistent compilation cache for dgm's programs, on by default in a user cache directory.

Compiling constrained HMC costs seconds (XLA's optimisation passes over nested ``while`` loops); the compiled program
for the same model code, method, options and shapes is the same in every process. :func:`dgm.sample` therefore turns
on JAX's own persistent compilation cache (``jax_compilation_cache_dir``; nothing of dgm's making) the first time it
runs, so a second ``dgm lotka-volterra`` in a new process loads its programs from disk instead of compiling them.

* Location: ``$DGM_CACHE_DIR/jax`` if set, else ``$XDG_CACHE_HOME/dgm/jax``, else ``~/.cache/dgm/jax``.
* Opt out: ``DGM_COMPILATION_CACHE=0`` in the environment, or ``dgm.sample(..., compilation_cache=False)``.
* A cache directory the user configured for JAX themselves (``jax.config.update("jax_compilation_cache_dir", ...)``
  or ``JAX_COMPILATION_CACHE_DIR``) is respected and left alone.

This changes a process-wide JAX setting (the cache directory and the minimum compile time worth caching, 0.2 s); it is
documented here and in the README because it is a global effect, and it can be switched off as above.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

_MIN_COMPILE_SECONDS = 0.2


def default_cache_dir() -> Path:
    """Where dgm keeps JAX's compiled programs unless told otherwise."""
    if os.environ.get("DGM_CACHE_DIR"):
        return Path(os.environ["DGM_CACHE_DIR"]) / "jax"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dgm" / "jax"


def disabled_by_environment() -> bool:
    return os.environ.get("DGM_COMPILATION_CACHE", "1").strip().lower() in ("0", "false", "no", "off")


def enable(path=None) -> Path | None:
    """Turn on JAX's persistent compilation cache at ``path`` (default :func:`default_cache_dir`).

    Returns the directory in use, or ``None`` when caching is off (``DGM_COMPILATION_CACHE=0``) or the directory
    cannot be created (a read-only home: dgm then just compiles, as JAX would). A directory already configured for JAX
    by the user wins.
    """
    if disabled_by_environment():
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    directory = Path(path) if path is not None else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    return directory
