#!/usr/bin/env python
"""Implicit reparameterisation gradients (Figurnov, Mohamed & Mnih, NeurIPS 2018): cost and accuracy.

Threads: single-threaded XLA and BLAS/OpenMP (:func:`dgm.threads.configure_cpu_threads`, before JAX/NumPy load;
printed); every compared method runs under it.

1. Timing, ``n`` draws (10^6; 10^5 with ``--quick``), one parameter value per draw (as a VAE's encoder outputs):
   sample-only versus sample + gradient of ``sum f(z)`` with respect to all parameters (``jax.value_and_grad``), both
   jitted, ``block_until_ready``, best of ``--repeats`` runs, the two measured alternately in the same run; ratio.
   Baselines: Gamma by Marsaglia-Tsang with shape augmentation (Naesseth et al., 2017), differentiated through the
   accepted proposal's transform (a plain, explicit reparameterisation); ``jax.random.gamma``'s own JVP (the same
   implicit gradient, evaluated entry by entry with ``lax.map`` on CPU; dgm attaches it in one vectorised call).
2. Gradient estimators for Gamma: implicit (``jax.random.gamma``) versus the augmented Marsaglia-Tsang pathwise
   gradient (which ignores the dependence of the acceptance on ``alpha`` and is biased for small augmentation) on
   ``d/dalpha E[log z] = psi'(alpha)``: estimate, standard error, z-score.
3. Finite differences (float64, h = 1e-6 max(1, phi)): (a) of the CDF, i.e. the implicit rule with a numerical
   ``dF/dphi``; (b) of the sampler with common random numbers: the pathwise derivative of a rejection sampler is not
   the implicit gradient (different coupling of ``z`` and ``phi``) and jumps where an accept decision flips; median
   and maximum relative deviation from the reference are shown.
4. Error table (float64): maximum relative error of ``dz/dphi`` at sampled points against an independent reference:
   von Mises, 5-point central differences (h = 1e-3 kappa) of the CDF by ``scipy.integrate.quad``; Gamma, the same
   of ``scipy.special.gammainc``/``gammaincc``; Beta, the chain rule ``dz/da = z(1-z) dlogG_a/da`` with the Gamma
   reference (jax.random.beta's gradient is through its Gamma variates, see dgm.vi.distributions).

    python benchmarks/implicit_reparam.py [--quick] [--n N] [--repeats R]
"""

from __future__ import annotations

import os

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate as si  # noqa: E402
import scipy.special as ss  # noqa: E402
from jax import lax  # noqa: E402

from dgm.vi.distributions import Beta, Dirichlet, Gamma  # noqa: E402
from dgm.vi.von_mises import KAPPA_SWITCH, rsample_von_mises, sample_von_mises, von_mises_cdf  # noqa: E402
from dgm.vi.von_mises import von_mises_log_prob  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------------
# baseline: Marsaglia-Tsang with shape augmentation, pathwise-differentiated (explicit reparameterisation)
# ----------------------------------------------------------------------------------------------------------------------
def gamma_mt_rsample(key, alpha, boost: int):
    """Gamma(alpha) draws ``z = h(eps, alpha + B) prod_{i<B} u_i^{1/(alpha+i)}`` with ``h(eps, a) = (a - 1/3)
    (1 + eps / sqrt(9a - 3))^3`` and ``eps`` the accepted Marsaglia-Tsang proposal (found without gradients).
    Differentiating ``h`` at fixed ``eps``/``u`` is the reparameterisation part of RSVI (Naesseth et al., 2017)."""
    a_aug = alpha + boost
    a0 = lax.stop_gradient(a_aug)
    d0 = a0 - 1.0 / 3.0
    c0 = 1.0 / jnp.sqrt(9.0 * d0)
    k_rej, k_aug = jax.random.split(key)

    def body(state):
        key, done, eps = state
        key, k1, k2 = jax.random.split(key, 3)
        e = jax.random.normal(k1, alpha.shape, alpha.dtype)
        u = jax.random.uniform(k2, alpha.shape, alpha.dtype)
        v = (1.0 + c0 * e) ** 3
        ok = (v > 0) & (jnp.log(u) < 0.5 * e * e + d0 - d0 * v + d0 * jnp.log(jnp.where(v > 0, v, 1.0)))
        take = ok & ~done
        return key, done | ok, jnp.where(take, e, eps)

    _, _, eps = lax.while_loop(lambda s: ~jnp.all(s[1]), body,
                               (k_rej, jnp.zeros(alpha.shape, bool), jnp.zeros_like(alpha)))
    d = a_aug - 1.0 / 3.0
    z = d * (1.0 + eps / jnp.sqrt(9.0 * d)) ** 3
    if boost:
        u = jax.random.uniform(k_aug, (boost,) + alpha.shape, alpha.dtype)
        i = jnp.arange(boost, dtype=alpha.dtype).reshape((boost,) + (1,) * alpha.ndim)
        z = z * jnp.exp(jnp.sum(jnp.log(u) / (alpha + i), 0))
    return z


# ----------------------------------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------------------------------
def _quad(f, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return si.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=400)[0]


def _vm_pdf(t, k):
    return np.exp(k * (np.cos(t) - 1.0)) / (2.0 * np.pi * ss.i0e(k))


def _stencil(f, x, h):
    return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12 * h)


def ref_vm_dz_dkappa(x, k):
    ax = abs(x)
    t0 = math.acos(ss.i1e(k) / ss.i0e(k))
    if ax <= t0:
        f = lambda kk: _quad(lambda t: _vm_pdf(t, kk), 0.0, ax)
    else:
        f = lambda kk: -_quad(lambda t: _vm_pdf(t, kk), ax, math.pi)
    return -math.copysign(_stencil(f, k, 1e-3 * k), x) / _vm_pdf(x, k)


def _gamma_dP(z, a):
    if ss.gammainc(a, z) < 0.5:
        return _stencil(lambda aa: ss.gammainc(aa, z), a, 1e-3 * a)
    return -_stencil(lambda aa: ss.gammaincc(aa, z), a, 1e-3 * a)


def ref_gamma_dz_da(z, a):
    return -_gamma_dP(z, a) / math.exp((a - 1) * math.log(z) - z - ss.gammaln(a))


def ref_gamma_dlogz_da(log_z, a):
    return -_gamma_dP(math.exp(log_z), a) / math.exp(a * log_z - math.exp(log_z) - ss.gammaln(a))


# ----------------------------------------------------------------------------------------------------------------------
# 1. timing
# ----------------------------------------------------------------------------------------------------------------------
def _block(x):
    return jax.block_until_ready(x)


def time_pair(f_sample, f_grad, args_s, args_g, repeats):
    _block(f_sample(*args_s))
    _block(f_grad(*args_g))
    ts, tg = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        _block(f_sample(*args_s))
        ts.append(time.perf_counter() - t)
        t = time.perf_counter()
        _block(f_grad(*args_g))
        tg.append(time.perf_counter() - t)
    return min(ts), min(tg)


def timing_table(n, repeats):
    key = jax.random.PRNGKey(0)
    rows = []

    def add(name, sample, rsample, loss, params):
        fs = jax.jit(lambda k, p: sample(k, p))
        fg = jax.jit(jax.value_and_grad(lambda p, k: jnp.sum(loss(rsample(k, p)))))
        ts, tg = time_pair(fs, fg, (key, params), (params, key), repeats)
        rows.append((name, ts, tg))
        print(f"  {name:<44s} {1e3 * ts:9.1f} {1e3 * tg:11.1f} {tg / ts:7.2f}", flush=True)

    print(f"\n1. Timing, n = {n:,} draws (one parameter per draw), best of {repeats}; float32\n")
    print(f"  {'distribution':<44s} {'sample ms':>9s} {'+grad ms':>11s} {'ratio':>7s}")
    vm_s = lambda k, p: sample_von_mises(k, 0.0, p)
    vm_r = lambda k, p: rsample_von_mises(k, 0.0, p)
    for kap in (0.5, 5.0, 50.0):
        add(f"von Mises kappa={kap:g}", vm_s, vm_r, jnp.cos, jnp.full((n,), kap))
    mixed = jnp.exp(jax.random.uniform(jax.random.PRNGKey(1), (n,), minval=math.log(1e-2), maxval=math.log(1e3)))
    add("von Mises kappa ~ logU[1e-2, 1e3]", vm_s, vm_r, jnp.cos, mixed)
    for a in (0.5, 5.0):
        p = jnp.full((n,), a)
        add(f"Gamma alpha={a:g} implicit (dgm Gamma)", lambda k, q: Gamma(q).sample(k),
            lambda k, q: Gamma(q).rsample(k), jnp.log, p)
        if a < 1:
            add(f"Gamma alpha={a:g} jax.random.gamma's own JVP", lambda k, q: jax.random.gamma(k, q),
                lambda k, q: jax.random.gamma(k, q), jnp.log, p)
        for boost in ((1, 4) if a < 1 else (0, 4)):
            add(f"Gamma alpha={a:g} Marsaglia-Tsang, B={boost} (explicit)",
                lambda k, q, b=boost: lax.stop_gradient(gamma_mt_rsample(k, q, b)),
                lambda k, q, b=boost: gamma_mt_rsample(k, q, b), jnp.log, p)
    add("Beta a=b=2 (Gamma ratio)", lambda k, q: Beta(q, q).sample(k), lambda k, q: Beta(q, q).rsample(k),
        jnp.log, jnp.full((n,), 2.0))
    add("Dirichlet K=3 alpha=(0.5,1,2), n vectors", lambda k, q: Dirichlet(q).sample(k),
        lambda k, q: Dirichlet(q).rsample(k), jnp.log, jnp.broadcast_to(jnp.array([0.5, 1.0, 2.0]), (n, 3)))
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# 2. gradient estimators for Gamma
# ----------------------------------------------------------------------------------------------------------------------
def estimator_table(n):
    print(f"\n2. Gradient estimators of d/dalpha E[log z] = psi'(alpha), Gamma, n = {n:,}, float64\n")
    print(f"  {'alpha':>6s} {'estimator':<34s} {'estimate':>12s} {'exact':>12s} {'SE':>10s} {'z-score':>8s}")
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(3)
        for a in (0.5, 2.0):
            exact = float(ss.polygamma(1, a))
            cands = [("implicit (dgm Gamma)", lambda q: Gamma(q).rsample(key))]
            for boost in ((1, 2, 5) if a < 1 else (0, 1, 5)):
                cands.append((f"Marsaglia-Tsang B={boost} pathwise", lambda q, b=boost: gamma_mt_rsample(key, q, b)))
            for name, f in cands:
                p = jnp.full((n,), a)
                z, dz = jax.jit(lambda q: jax.jvp(f, (q,), (jnp.ones_like(q),)))(p)
                g = np.asarray(dz / z)
                est, se = g.mean(), g.std(ddof=1) / math.sqrt(n)
                print(f"  {a:6.2f} {name:<34s} {est:12.6f} {exact:12.6f} {se:10.2e} {(est - exact) / se:8.2f}")


# ----------------------------------------------------------------------------------------------------------------------
# 3 + 4. finite differences and accuracy
# ----------------------------------------------------------------------------------------------------------------------
def accuracy_table(m, quick):
    print(f"\n3./4. Accuracy of dz/dphi at sampled points (float64), {m} draws per parameter value; max relative "
          "error against the independent reference\n")
    print(f"  {'distribution':<30s} {'parameter grid':<30s} {'points':>6s} {'implicit (AD)':>13s} "
          f"{'implicit(FD-CDF)':>16s} {'FD sampler med/max':>19s}")
    rows = []
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(2018)
        # von Mises
        kaps = list(np.geomspace(1e-2, 1e3, 7 if quick else 13)) + [KAPPA_SWITCH * (1 - 1e-9), KAPPA_SWITCH]
        kap = jnp.asarray(kaps)
        f = lambda k: rsample_von_mises(key, 0.0, k, (m,))
        z, dz = jax.jit(lambda k: jax.jvp(f, (k,), (jnp.ones_like(k),)))(kap)
        h = 1e-6 * jnp.maximum(kap, 1.0)
        fd_cdf = -(von_mises_cdf(z, 0.0, kap + h) - von_mises_cdf(z, 0.0, kap - h)) / (2 * h) \
            / jnp.exp(von_mises_log_prob(z, 0.0, kap))
        fd_smp = (f(kap + h) - f(kap - h)) / (2 * h)
        z, dz, fd_cdf, fd_smp = (np.asarray(v) for v in (z, dz, fd_cdf, fd_smp))
        ref = np.array([[ref_vm_dz_dkappa(float(z[i, j]), float(kaps[j])) for j in range(len(kaps))]
                        for i in range(m)])
        rs = np.abs(fd_smp - ref) / np.abs(ref)
        rows.append(("von Mises dz/dkappa", "kappa in [1e-2, 1e3] +20^-,20", ref.size,
                     np.max(np.abs(dz - ref) / np.abs(ref)), np.max(np.abs(fd_cdf - ref) / np.abs(ref)),
                     f"{np.median(rs):.1e} / {rs.max():.0e}"))
        # Gamma
        alphas = np.geomspace(1e-2, 1e2, 5 if quick else 9)
        al = jnp.asarray(alphas)
        g = lambda a: jax.random.gamma(key, a, (m, len(alphas)))
        z, dz = jax.jit(lambda a: jax.jvp(g, (a,), (jnp.ones_like(a),)))(al)
        h = 1e-6 * jnp.maximum(al, 1.0)
        from jax.scipy.special import gammainc, gammaln
        fd_cdf = -(gammainc(al + h, z) - gammainc(al - h, z)) / (2 * h) \
            / jnp.exp((al - 1) * jnp.log(z) - z - gammaln(al))
        fd_smp = (g(al + h) - g(al - h)) / (2 * h)
        z, dz, fd_cdf, fd_smp = (np.asarray(v) for v in (z, dz, fd_cdf, fd_smp))
        ok = z > 0
        ref = np.full_like(z, np.nan)
        for i, j in zip(*np.nonzero(ok)):
            ref[i, j] = ref_gamma_dz_da(float(z[i, j]), float(alphas[j]))
        rel = np.abs(dz - ref) / np.abs(ref)
        relfd = np.abs(fd_cdf - ref) / np.abs(ref)
        rs = (np.abs(fd_smp - ref) / np.abs(ref))[ok]
        rows.append(("Gamma dz/dalpha", "alpha in [1e-2, 1e2]", int(ok.sum()), np.nanmax(rel), np.nanmax(relfd),
                     f"{np.median(rs):.1e} / {rs.max():.0e}"))
        # Beta via Gamma variates
        aa = np.geomspace(1e-2, 1e2, 5)
        bb = np.array([2.0, 0.05, 30.0, 1.0, 100.0])
        ka, kb = jax.random.split(key)

        @jax.jit
        def beta_run(a, b):
            z, da = jax.jvp(lambda x: Beta(x, b).rsample(key, (m,)), (a,), (jnp.ones_like(a),))
            shape = (m, 5)
            return (z, da, jax.random.loggamma(ka, jnp.broadcast_to(a, shape), shape),
                    jax.random.loggamma(kb, jnp.broadcast_to(b, shape), shape))

        z, da, lga, lgb = (np.asarray(v) for v in beta_run(jnp.asarray(aa), jnp.asarray(bb)))
        errs = []
        for i in range(m):
            for j in range(5):
                # z (1 - z) = G_a G_b / (G_a + G_b)^2 from the log-Gammas (1 - z loses digits when z ~ 1)
                w = math.exp(lga[i, j] + lgb[i, j] - 2 * np.logaddexp(lga[i, j], lgb[i, j]))
                if w > 0 and math.exp(lga[i, j]) > 0:
                    e = w * ref_gamma_dlogz_da(float(lga[i, j]), float(aa[j]))
                    errs.append(abs(da[i, j] - e) / abs(e))
        rows.append(("Beta dz/da (Gamma chain)", "a in [1e-2, 1e2], b varied", len(errs), max(errs), float("nan"),
                     "-"))
    for r in rows:
        print(f"  {r[0]:<30s} {r[1]:<30s} {r[2]:6d} {r[3]:13.2e} {r[4]:16.2e} {r[5]:>19s}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^5 draws, fewer repeats and grid points")
    parser.add_argument("--n", type=int, default=None, help="draws for the timing table (default 10^6)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 5)
    print("Implicit reparameterisation gradients: benchmark")
    print("threads: " + ", ".join(f"{k}={v!r}" for k, v in THREADS.items()))
    print(f"jax {jax.__version__}, device {jax.devices()[0].device_kind}, cores visible {os.cpu_count()}")
    accuracy_table(8 if args.quick else 32, args.quick)
    estimator_table(50_000 if args.quick else 400_000)
    rows = timing_table(n, repeats)
    vm = [tg / ts for name, ts, tg in rows if name.startswith("von Mises")]
    print(f"\nvon Mises sample+gradient / sample-only: max ratio {max(vm):.2f} (target <= 2)")


if __name__ == "__main__":
    main()
