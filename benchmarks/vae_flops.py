#!/usr/bin/env python
"""Achieved FLOP/s of a VAE training epoch on MNIST against a plain ``jnp.dot`` benchmark at the same shapes, measured
side by side in one run (issue target: the epoch reaches at least 50 % of the dot benchmark's FLOP/s on CPU).

The epoch is the library's own (:func:`dgm.vae.train.adam_steps`, as used by ``dgm.vae.train`` and ``dgm
vae-benchmark``): the ``dgm vae-benchmark`` architecture (Bernoulli VAE, MLP 784-200-200, latent 20, tanh), float32,
dynamically binarised minibatches of ``--batch-size`` gathered from the device-resident training set, Adam, the
whole epoch one compiled ``lax.scan``. Its work is counted two ways:

* ``matmul FLOPs``: ``2 m n k`` for every matrix product a step must do -- the forward pass of each of the six dense
  layers, and in the backward pass the weight gradient of every layer and the input gradient of every layer but the
  first (the gradient with respect to the data is not needed): ``batch * 2 * (3 * sum(in*out) - 784*200)``;
* ``XLA FLOPs``: XLA's own cost analysis of one compiled step (everything, element-wise work included).

The reference is the same matrix products -- the same shapes, transposes and count per step -- and nothing else, in
one compiled ``lax.scan`` over as many steps as the epoch: what the machine can do at these shapes. Reported: the
matmul FLOP/s of each and their ratio (= time of the dots alone / time of the epoch), best of ``--repeats``, on the
process's CPU clock (with XLA and BLAS single-threaded it measures the work done and is insensitive to other jobs on a
shared machine) and on the wall clock.

Threads: single-threaded XLA/BLAS (``dgm.threads.configure_cpu_threads``, set before JAX is imported; printed).

    python benchmarks/vae_flops.py [--batch-sizes 100 500] [--train-size 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

from dgm.vae import VAE, VAEConfig  # noqa: E402
from dgm.vae.objectives import elbo  # noqa: E402
from dgm.vae.train import TrainingBar, adam_steps  # noqa: E402


def layer_shapes(config: VAEConfig):
    """``[(in, out)]`` of the encoder's then the decoder's dense layers."""
    enc = [config.data_dim, *config.hidden, 2 * config.latent_dim]
    dec = [config.latent_dim, *config.decoder_widths, config.data_dim]
    return list(zip(enc[:-1], enc[1:])) + list(zip(dec[:-1], dec[1:]))


def matmul_flops_per_step(config: VAEConfig, batch: int) -> int:
    shapes = layer_shapes(config)
    fwd = sum(2 * batch * i * o for i, o in shapes)
    grad_w = fwd
    grad_x = fwd - 2 * batch * shapes[0][0] * shapes[0][1]  # no gradient with respect to the data
    return fwd + grad_w + grad_x


def dot_reference(config: VAEConfig, batch: int, n_steps: int):
    """A compiled scan of ``n_steps`` steps doing exactly the step's matrix products (module docstring)."""
    shapes = layer_shapes(config)
    key = jax.random.key(0)
    ws = [jax.random.normal(jax.random.fold_in(key, j), (i, o), jnp.float32) * 0.01
          for j, (i, o) in enumerate(shapes)]
    xs = [jax.random.normal(jax.random.fold_in(key, 100 + j), (batch, i), jnp.float32)
          for j, (i, o) in enumerate(shapes)]
    gs = [jax.random.normal(jax.random.fold_in(key, 200 + j), (batch, o), jnp.float32) for j, (i, o) in enumerate(shapes)]

    @jax.jit
    def run(ws, xs, gs):
        def body(acc, _):
            total = acc
            for j, (w, x, g) in enumerate(zip(ws, xs, gs)):
                y = jnp.dot(x + total, w)  # forward (the carry keeps XLA from hoisting the product out of the loop)
                dw = jnp.dot(x.T, g + total)  # weight gradient
                total = total + 1e-30 * (y[0, 0] + dw[0, 0])
                if j != 0:
                    dx = jnp.dot(g + total, w.T)  # input gradient
                    total = total + 1e-30 * dx[0, 0]
            return total, None

        total, _ = lax.scan(body, jnp.zeros((), jnp.float32), None, length=n_steps)
        return total

    return run, (ws, xs, gs)


def best_time(fn, args, repeats: int):
    jax.block_until_ready(fn(*args))  # compile + warm
    best_cpu, best_wall = np.inf, np.inf
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        best_cpu, best_wall = min(best_cpu, time.process_time() - c0), min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 500], help="minibatch sizes to measure")
    p.add_argument("--train-size", type=int, default=10000, help="images per epoch (synthetic intensities)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement (best kept)")
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", default="200,200")
    args = p.parse_args(argv)
    print(f"threads: {THREADS}")
    config = VAEConfig(data_dim=784, latent_dim=args.latent_dim, hidden=tuple(int(w) for w in args.hidden.split(",")),
                       likelihood="bernoulli")
    intensities = jax.random.uniform(jax.random.key(1), (args.train_size, 784), jnp.float32)
    rows = []
    for batch in args.batch_sizes:
        n_steps = args.train_size // batch
        vae = VAE(config, key=jax.random.key(0))
        params, static = eqx.partition(vae, eqx.is_inexact_array)
        optimiser = optax.adam(1e-3)
        opt_state = optimiser.init(params)

        def loss(p, xb, key):
            return -jnp.mean(elbo(eqx.combine(p, static), xb, key, 1))

        steps = adam_steps(loss, optimiser, args.train_size, batch, jax.random.key(2), jax.random.key(3),
                           TrainingBar(0, "", False), binarise_key=jax.random.key(4))
        epoch = jax.jit(lambda p, s, x: steps(p, s, x, 0, 0, n_steps, jnp.zeros((), jnp.float32)))

        one_step = jax.jit(lambda p, s, x: steps(p, s, x, 0, 0, 1, jnp.zeros((), jnp.float32)))
        cost = one_step.lower(params, opt_state, intensities).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        mm_flops = matmul_flops_per_step(config, batch) * n_steps
        e_cpu, e_wall = best_time(epoch, (params, opt_state, intensities), args.repeats)
        ref, ref_args = dot_reference(config, batch, n_steps)
        d_cpu, d_wall = best_time(ref, ref_args, args.repeats)
        rows.append((batch, n_steps, mm_flops, xla_flops * n_steps, e_cpu, e_wall, d_cpu, d_wall))
        print(f"batch {batch}: epoch {e_cpu:.3f} s CPU ({e_wall:.3f} s wall), dots alone {d_cpu:.3f} s CPU "
              f"({d_wall:.3f} s wall)", flush=True)
    print(f"\n{args.train_size} images per epoch; VAE 784-{args.hidden}-{args.latent_dim} (Bernoulli), float32, Adam, "
          "dynamic binarisation; best of", args.repeats)
    head = (f"{'batch':>6}{'steps':>7}{'matmul GFLOP':>14}{'XLA GFLOP':>11}{'epoch GFLOP/s':>15}{'dot GFLOP/s':>13}"
            f"{'ratio (CPU)':>13}{'ratio (wall)':>14}")
    print(head)
    for batch, n_steps, mm, xla, e_cpu, e_wall, d_cpu, d_wall in rows:
        print(f"{batch:>6}{n_steps:>7}{mm / 1e9:>14.2f}{xla / 1e9:>11.2f}{mm / e_cpu / 1e9:>15.2f}"
              f"{mm / d_cpu / 1e9:>13.2f}{d_cpu / e_cpu:>13.2f}{d_wall / e_wall:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
