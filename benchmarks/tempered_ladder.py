"""The self-adapting ladder of ``chmc-tempered`` against the fixed default ladder, on sbibm's two_moons (issue 23).

sbibm's ``two_moons`` simulator written as a dgm generator of four standard-normal inputs
``u = (u_theta1, u_theta2, u_a, u_r)``: ``theta_i = 2 Phi(u_theta_i) - 1`` (the ``U(-1, 1)`` prior through its inverse
CDF), ``a = pi (Phi(u_a) - 1/2)``, ``r = 0.1 + 0.01 u_r``, and

    x = (r cos a + 0.25 - |theta1 + theta2| / sqrt(2),  r sin a + (theta2 - theta1) / sqrt(2)),

conditioned on sbibm's observation 1 (read from the installed ``sbibm`` wheel; the values are repeated below for when
it is missing). The posterior has two crescents, images of each other under the reflection
``(theta1, theta2) -> (-theta2, -theta1)``, which preserves the prior and ``x``: the exact crescent weights are
``1/2`` each. The crescent of a draw is the sign of ``theta1 + theta2``.

For seeds 0-4 both ladders run side by side in this one run, with the defaults (``method="chmc-tempered"``, 8 chains,
500 warm-up and 500 sampling iterations, chains started by dgm's own initialisation): ``adapt_ladder=True`` (the
default) and ``adapt_ladder=False`` (the fixed default ladder, top scale ``RMS(x_obs)``). Reported per run: the pooled
weight of the crescent ``theta1 + theta2 > 0`` with its Monte-Carlo standard error (ArviZ, ESS-based), the distance
from 1/2 in standard errors (target: within 4), the split R-hat and bulk ESS of the crescent indicator, the final
ladder (levels, top scale), the global communication barrier Lambda, the sampling phase's round trips (sum over
chains), seconds of warm-up + sampling, and whether the mode-mixing warning fired.

    python benchmarks/tempered_ladder.py            # 10 runs, about 10 minutes on 2 busy cores
    python benchmarks/tempered_ladder.py --quick    # seeds 0-1, shorter runs
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dgm  # noqa: E402

OBSERVATION_1 = np.array([-0.6396706, 0.16234657])  # sbibm two_moons/files/num_observation_1/observation.csv


def two_moons_observation(number: int = 1) -> np.ndarray:
    """sbibm's observation ``number`` of two_moons, from the installed wheel (observation 1 built in as fallback)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("sbibm")
        path = os.path.join(os.path.dirname(spec.origin), "tasks", "two_moons", "files",
                            f"num_observation_{number}", "observation.csv")
        return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64).reshape(-1)
    except (AttributeError, TypeError, OSError):
        if number != 1:
            raise
        return OBSERVATION_1


def two_moons_generator(u):
    phi = jax.scipy.stats.norm.cdf
    theta = 2.0 * phi(u[:2]) - 1.0
    a = jnp.pi * (phi(u[2]) - 0.5)
    r = 0.1 + 0.01 * u[3]
    return jnp.stack([r * jnp.cos(a) + 0.25 - jnp.abs(theta[0] + theta[1]) / jnp.sqrt(2.0),
                      r * jnp.sin(a) + (theta[1] - theta[0]) / jnp.sqrt(2.0)])


def two_moons_model() -> dgm.GenerativeModel:
    return dgm.GenerativeModel(two_moons_generator, 4, name="two_moons")


def crescent(inputs) -> np.ndarray:
    """1 where ``theta1 + theta2 > 0`` (``u1 + u2 > 0``, as ``Phi`` is increasing and odd about 0)."""
    return (np.asarray(inputs)[..., 0] + np.asarray(inputs)[..., 1] > 0).astype(float)


def indicator_stats(indicator):
    import arviz_stats

    data = np.asarray(indicator, dtype=float)[..., None]  # (chain, draw, 1)
    ess = float(np.asarray(arviz_stats.ess(data, method="bulk", chain_axis=0, draw_axis=1)).reshape(-1)[0])
    rhat = float(np.asarray(arviz_stats.rhat(data, chain_axis=0, draw_axis=1)).reshape(-1)[0])
    mean = float(np.mean(data))
    se = float(np.sqrt(mean * (1 - mean) / max(ess, 1.0))) if 0 < mean < 1 else float("nan")
    return mean, se, rhat, ess


def run(seed, adapt, n_chains, n_warmup, n_samples):
    x = two_moons_observation(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = dgm.sample(two_moons_model(), x, method="chmc-tempered", n_chains=n_chains, n_warmup=n_warmup,
                            n_samples=n_samples, seed=seed, progress=False, adapt_ladder=adapt)
    mixing = any("mode" in str(w.message).lower() and "mix" in str(w.message).lower() for w in caught)
    weight, se, rhat, ess = indicator_stats(crescent(result.inputs))
    s = result.settings
    return dict(seed=seed, adapt=adapt, weight=weight, se=se, z=abs(weight - 0.5) / se if se == se else np.inf,
                rhat=rhat, ess=ess, levels=s.get("n_levels"), top=s["noise_scales"][-1], barrier=s.get("barrier"),
                trips=int(np.sum(s.get("round_trips", [0]))), seconds=result.wall_time, compile=result.compile_time,
                warned=mixing)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seeds 0-1, 300 + 300 iterations")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--chains", type=int, default=8)
    args = parser.parse_args()
    seeds = range(2 if args.quick else args.seeds)
    n_warmup, n_samples = (300, 300) if args.quick else (500, 500)
    print(f"two_moons observation 1 = {two_moons_observation(1)}; threads: {THREADS}; {args.chains} chains, "
          f"{n_warmup} + {n_samples} iterations; backend {jax.default_backend()}")
    header = (f"{'ladder':8} {'seed':>4} {'weight':>7} {'s.e.':>6} {'|w-.5|/se':>9} {'R-hat':>6} {'ESS':>6} "
              f"{'levels':>6} {'top':>6} {'Lambda':>6} {'trips':>5} {'s':>6} {'warned':>6}")
    rows = []
    for seed in seeds:
        for adapt in (True, False):
            rows.append(run(seed, adapt, args.chains, n_warmup, n_samples))
            r = rows[-1]
            if len(rows) == 1:
                print(f"(first run compiled in {r['compile']:.1f} s)")
                print(header)
            print(f"{'adapted' if adapt else 'fixed':8} {seed:>4} {r['weight']:7.3f} {r['se']:6.3f} {r['z']:9.2f} "
                  f"{r['rhat']:6.3f} {r['ess']:6.0f} {r['levels'] or '-':>6} {r['top']:6.3f} "
                  f"{r['barrier'] if r['barrier'] is not None else float('nan'):6.2f} {r['trips']:5d} "
                  f"{r['seconds']:6.1f} {str(r['warned']):>6}", flush=True)
    for adapt in (True, False):
        sel = [r for r in rows if r["adapt"] == adapt]
        ok = sum(r["z"] <= 4 for r in sel)
        trusted = sum(r["z"] <= 4 and r["rhat"] <= 1.1 for r in sel)  # an s.e. from ESS ~ 10 proves nothing
        print(f"{'adapted' if adapt else 'fixed'}: {ok}/{len(sel)} runs within 4 s.e. of 1/2, {trusted} of them with "
              f"the crescent's R-hat <= 1.1; mean time {np.mean([r['seconds'] for r in sel]):.1f} s; mixing warnings "
              f"on {sum(r['warned'] for r in sel)}")
    fixed = [r["seconds"] for r in rows if not r["adapt"]]
    adapted = [r["seconds"] for r in rows if r["adapt"]]
    print(f"time ratio adapted / fixed: {np.mean(adapted) / np.mean(fixed):.2f}")


if __name__ == "__main__":
    main()
