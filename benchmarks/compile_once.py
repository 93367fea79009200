"""Compile once, start fast: first-call compilation, repeated-call overhead, and a new process with the persistent cache.

For a 3-input curved model and the Lotka-Volterra model (paper preset, structured geometry) it prints, per call of
``dgm.sample``: set-up (initialisation onto the manifold and checks), compilation, sampling, and the overhead (total
call time minus sampling). Three situations, side by side in one run:

1. first call in a fresh process with no persistent cache (``DGM_COMPILATION_CACHE=0``);
2. repeated calls in the same process, with new seeds and new observations of the same shape (target: overhead
   <= 0.1 s per call);
3. a new process reading JAX's persistent compilation cache written by an earlier process (target: compile <= 1 s).

Each situation runs in its own subprocess so that nothing is shared but what the situation allows. Usage::

    python benchmarks/compile_once.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dgm.threads import configure_cpu_threads  # noqa: E402  (before JAX starts)

THREADS = configure_cpu_threads()

CHILD = r"""
import json, sys, time
import jax.numpy as jnp, numpy as np
import dgm
from dgm.models.lotka_volterra import default_observations, lotka_volterra
from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET

which, repeats = sys.argv[1], int(sys.argv[2])
if which == "curved":
    A = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 1.0]])
    model = dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u + 0.1 * jnp.sin(u[:2]), 3)
    observations = [np.array([1.0, 0.1 * k]) for k in range(repeats)]
    kwargs = dict(n_warmup=200, n_samples=200)
else:
    x = default_observations("semi-implicit")
    model = lotka_volterra(x)
    observations = [x] * repeats
    kwargs = dict(n_warmup=100, n_samples=300, **PAPER_PRESET)
rows = []
for k, x_obs in enumerate(observations):
    start = time.perf_counter()
    result = dgm.sample(model, x_obs, seed=k, progress=False, **kwargs)
    total = time.perf_counter() - start
    rows.append(dict(total=total, setup=result.setup_time, compile=result.compile_time, sampling=result.wall_time,
                     overhead=total - result.wall_time, residual=result.max_residual))
print("ROWS" + json.dumps(rows))
"""


def run_child(which: str, repeats: int, cache: str | None) -> list[dict]:
    env = dict(os.environ)
    if cache is None:
        env["DGM_COMPILATION_CACHE"] = "0"
    else:
        env["DGM_COMPILATION_CACHE"], env["DGM_CACHE_DIR"] = "1", cache
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(repeats)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.split("ROWS", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="calls per process in the repeated-call situation")
    args = parser.parse_args()
    print("threads:", json.dumps(THREADS))
    print(f"{'model':8} {'situation':38} {'set-up':>7} {'compile':>8} {'sampling':>9} {'overhead':>9}")
    for which in ("curved", "lotka-volterra"):
        with tempfile.TemporaryDirectory() as cache:
            first = run_child(which, args.repeats, None)
            run_child(which, 1, cache)  # writes the persistent cache
            second_process = run_child(which, 1, cache)[0]
        repeated = first[1:]
        mean = {k: sum(r[k] for r in repeated) / len(repeated) for k in repeated[0]}
        for label, row in (("first call, no persistent cache", first[0]),
                           (f"repeated calls (mean of {len(repeated)})", mean),
                           ("new process, persistent cache", second_process)):
            print(f"{which:8} {label:38} {row['setup']:7.2f} {row['compile']:8.2f} {row['sampling']:9.2f} "
                  f"{row['overhead']:9.2f}")
        print(f"{which:8} repeated-call overhead {mean['overhead']:.3f} s (target <= 0.1 s); new-process compile "
              f"{second_process['compile']:.2f} s (target <= 1 s); max residual "
              f"{max(r['residual'] for r in first):.1e}")


if __name__ == "__main__":
    main()
