"""What checkpointing costs: wall time with ``checkpoint_every`` = 1 % and 10 % of the run against no checkpoint, and
peak memory against the number of draws kept, in memory against streamed to disk.

1. Overhead (one process, the compiled programs shared, configurations interleaved, best of ``--repeats``): the
   whole ``dgm.sample`` call — set-up, sampling, state files (fsync'd) and draws written to the Zarr store — for
   the Lotka-Volterra model (paper preset, structured geometry: a realistic chunk cost) and a 3-input toy model
   (a chunk costs almost nothing: the worst case for the relative overhead). Target: <= 5 % at 10 %.
2. Peak memory (``resource.getrusage`` max RSS, one fresh subprocess per point): a ``--dim``-input model whose
   reported latents are the inputs (so ``u`` and ``z`` are both kept, 16 bytes per draw and dimension), sampled by
   HMC on its noisy relaxation (a gradient costs O(dim); the driver stores draws the same way for every method),
   2 chains,
   draws kept in memory (``dgm.sample``) against streamed (``checkpoint=DIR``), for several numbers of draws, and at
   10^4 dimensions; the slope gives the bytes per kept value and the extrapolation to 10^6 draws x 10^4 dimensions.

Thread configuration: single-threaded XLA and BLAS (:func:`dgm.threads.configure_cpu_threads`), in every subprocess.
Usage::

    python benchmarks/checkpoint_overhead.py [--iterations 3000] [--chunk-size 30] [--repeats 2]
                                             [--dim 2000] [--draws 1000,2000,4000,8000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dgm.threads import configure_cpu_threads  # noqa: E402  (before JAX starts)

THREADS = configure_cpu_threads()

MEMORY_CHILD = r"""
import json, resource, sys, tempfile
import jax.numpy as jnp, numpy as np
import dgm
mode, dim, draws = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = dgm.GenerativeModel(lambda u: jnp.atleast_1d(jnp.sum(u) + 0.1 * jnp.sum(jnp.sin(u))), dim, name="wide")
# HMC on the noisy relaxation: a gradient costs O(dim) (the draws, not the sampler, are what is measured here)
kwargs = dict(method="hmc", noise_scale=1.0, n_chains=2, n_warmup=0, n_samples=draws, step_size=0.05, n_steps=1,
              seed=0, progress=False, chunk_size=100, compilation_cache=False,
              initial_positions=np.full((2, dim), 0.5 / dim))  # no manifold solver: its dim x dim work is not the point
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as tmp:
    if mode == "memory":
        result = dgm.sample(model, np.array([1.0]), **kwargs)
    else:
        result = dgm.sample(model, np.array([1.0]), checkpoint=tmp + "/run", checkpoint_every=draws // 10, **kwargs)
    assert result.inputs.shape == (2, draws, dim)
    mean = float(np.mean(result.stats["acceptance_rate"]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print("ROW" + json.dumps({"mode": mode, "draws": draws, "peak_mib": peak / 1024, "before_mib": before / 1024,
                          "acceptance": mean}))
"""


def overhead(iterations: int, chunk_size: int, repeats: int) -> list[dict]:
    import jax.numpy as jnp
    import numpy as np

    import dgm
    from dgm.models.lotka_volterra import default_observations, lotka_volterra
    from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET

    from dgm.runtime import checkpoint as checkpointing

    # time spent in the checkpointing code itself (host side: state files, draw store), measured inside the run so
    # that it does not drown in the machine's load
    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    for name in ("after_chunk", "finish", "start", "resume"):
        setattr(checkpointing.Run, name, timed(getattr(checkpointing.Run, name)) if name in ("after_chunk", "finish")
                else classmethod(timed(getattr(checkpointing.Run, name).__func__)))

    x_lv = default_observations("semi-implicit")
    a = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 1.0]])
    cases = {
        "lotka-volterra (4 chains, paper preset)": (lotka_volterra(x_lv), x_lv, dict(**PAPER_PRESET)),
        "3-input toy (4 chains)": (dgm.GenerativeModel(lambda u: jnp.asarray(a) @ u + 0.1 * jnp.sin(u[:2]), 3),
                                   np.array([1.0, 0.0]), {}),
    }
    n_warmup = iterations // 10
    rows = []
    for label, (model, x, options) in cases.items():
        kwargs = dict(n_chains=4, n_warmup=n_warmup, n_samples=iterations - n_warmup, chunk_size=chunk_size,
                      seed=0, progress=False, **options)
        dgm.sample(model, x, **kwargs)  # compile
        everies = {"none": None, "1 %": max(1, iterations // 100), "10 %": max(1, iterations // 10)}
        best = {name: float("inf") for name in everies}
        inside = {name: float("inf") for name in everies}
        checkpoints = {}
        for _ in range(repeats):
            for name, every in everies.items():
                with tempfile.TemporaryDirectory() as tmp:
                    extra = {} if every is None else {"checkpoint": Path(tmp) / "run", "checkpoint_every": every}
                    spent[0] = 0.0
                    start = time.perf_counter()
                    dgm.sample(model, x, **kwargs, **extra)
                    best[name] = min(best[name], time.perf_counter() - start)
                    inside[name] = min(inside[name], spent[0])
                    if every is not None:  # state files are numbered: the last one's number counts them
                        checkpoints[name] = max(int(p.stem.split("-")[1]) for p in (Path(tmp) / "run").glob(
                            "state-*.ckpt"))
        rows.append({"case": label, "iterations": iterations, "chunk_size": chunk_size, **{
            f"{name} (s)": best[name] for name in everies}, **{
            f"{name} / none": best[name] / best["none"] for name in everies if name != "none"}, **{
            f"{name} checkpoints": n for name, n in checkpoints.items()}, **{
            f"{name} inside / none": inside[name] / best["none"] for name in everies if name != "none"}})
    return rows


def memory(dim: int, draws_list: list[int]) -> list[dict]:
    rows = []
    env = dict(os.environ, DGM_COMPILATION_CACHE="0")
    for draws in draws_list:
        for mode in ("memory", "streamed"):
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode, str(dim), str(draws)], env=env,
                                 capture_output=True, text=True, timeout=3600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-3000:])
            row = json.loads(out.stdout.split("ROW", 1)[1])
            row["kept_mib"] = 2 * 2 * draws * dim * 8 / 2**20  # u and z, 2 chains, float64
            rows.append(row)
            print(f"  {mode:8s} {draws:6d} draws x {dim} dims: peak RSS {row['peak_mib']:.0f} MiB "
                  f"(draws kept: {row['kept_mib']:.0f} MiB)", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="warm-up (10 %%) + sampling iterations")
    parser.add_argument("--chunk-size", type=int, default=30, help="iterations per compiled chunk")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is reported")
    parser.add_argument("--dim", type=int, default=2000, help="inputs of the memory benchmark's model")
    parser.add_argument("--draws", default="1000,2000,4000,8000", help="draws per chain in the memory benchmark")
    parser.add_argument("--skip", choices=["overhead", "memory"], help="leave one part out")
    args = parser.parse_args(argv)
    print(f"threads: {THREADS}")
    if args.skip != "overhead":
        print(f"\n== overhead of checkpointing (whole dgm.sample call, best of {args.repeats}) ==")
        for row in overhead(args.iterations, args.chunk_size, args.repeats):
            print(f"{row['case']}: {row['iterations']} iterations in chunks of {row['chunk_size']}: "
                  f"none {row['none (s)']:.2f} s, every 1 % {row['1 % (s)']:.2f} s "
                  f"(x{row['1 % / none']:.3f}, {row['1 % checkpoints']} state files), every 10 % "
                  f"{row['10 % (s)']:.2f} s (x{row['10 % / none']:.3f}, {row['10 % checkpoints']} state files); "
                  f"time inside the checkpointing code / run time without: {row['1 % inside / none']:.1%} at 1 %, "
                  f"{row['10 % inside / none']:.1%} at 10 %")
    if args.skip != "memory":
        draws_list = [int(d) for d in args.draws.split(",")]
        print(f"\n== peak memory against draws kept (u and z kept, 2 chains, chunks of 100) ==")
        rows = memory(args.dim, draws_list)
        wide = memory(10_000, [1000, 2000])  # the dimension of the example
        target = 2 * 1e6 * 1e4 * 8 / 2**20  # u and z of 10^6 draws x 10^4 dims (all chains together)
        for mode in ("memory", "streamed"):
            mine = [r for r in rows if r["mode"] == mode]
            slope = (mine[-1]["peak_mib"] - mine[-2]["peak_mib"]) / (mine[-1]["kept_mib"] - mine[-2]["kept_mib"])
            at_wide = [r["peak_mib"] for r in wide if r["mode"] == mode]
            print(f"{mode}: {args.dim} dims: peak RSS grows by {slope:.2f} MiB per MiB of draws kept (last doubling, "
                  f"{mine[-2]['draws']} -> {mine[-1]['draws']} draws); 10^4 dims: {at_wide[0]:.0f} MiB at 1000 draws, "
                  f"{at_wide[1]:.0f} MiB at 2000")
            if mode == "memory":
                print(f"  -> 10^6 draws x 10^4 dims (u and z: {target / 1024:.0f} GiB kept) would need "
                      f"~{slope * target / 1024:.0f} GiB")
            else:
                print(f"  -> 10^6 draws x 10^4 dims: flat in the number of draws, ~{max(at_wide) / 1024:.2f} GiB "
                      f"(one chunk's outputs and the write buffer; the draws go to disk: {target / 1024:.0f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
