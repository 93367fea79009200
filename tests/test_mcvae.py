"""Monte Carlo VAE bounds (dgm.vi.mcvae) on a linear-Gaussian model where ``log p(x)`` is exact.

Model: ``z ~ N(0, I_2)``, ``x | z ~ N(A z + b, s^2 I_3)``, so ``p(x) = N(x; b, A A^T + s^2 I)``.  Both bounds have
``E[w] = p(x)`` exactly (the importance weight of a path-space proposal against a path-space target), so the
sample mean of ``w / p(x)`` must be 1 within Monte-Carlo error, ``E[log w] <= log p(x)``, and the bound grows with
``K`` (tightens).  Tolerances are 4 Monte-Carlo standard errors.  Checked by hand that the test fails when the
science is wrong: dropping L-MCVAE's backward-kernel term makes the "bound" 6.8 > log p(x) = -3.6 at K = 10;
weighting A-MCVAE's annealing increments at the point *before* each transition instead of after gives mean
w / p(x) = 0.840 (MCSE 0.011, 14 MCSE off).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm.vi import mcvae

N_SE = 4.0
A = np.array([[1.0, 0.5], [-0.3, 0.8], [0.6, -1.0]])
B = np.array([0.2, -0.1, 0.4])
S = 0.5
X = np.array([1.4, -0.9, 1.6])


def exact_log_px():
    cov = A @ A.T + S**2 * np.eye(3)
    r = X - B
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * r @ np.linalg.solve(cov, r) - 0.5 * logdet - 1.5 * math.log(2 * math.pi))


def log_joint(z):
    r = (jnp.asarray(X, z.dtype) - jnp.asarray(A, z.dtype) @ z - jnp.asarray(B, z.dtype)) / S
    return (-0.5 * jnp.sum(r * r) - 3 * math.log(S) - 1.5 * math.log(2 * math.pi)
            - 0.5 * jnp.sum(z * z) - math.log(2 * math.pi))


def posterior():
    cov = np.linalg.inv(np.eye(2) + A.T @ A / S**2)
    return cov @ A.T @ (X - B) / S**2, cov


def draws(kind, k, n=4000, step=None, seed=0, target=log_joint):
    step = {"langevin": 0.05, "annealed": 0.2}[kind] if step is None else step
    kernel = mcvae.MCVAEKernel(k, step, kind, dtype=jnp.float64)
    mean, cov = posterior()
    # q_0: shifted and over-dispersed against the exact posterior -- a poor proposal (so the transitions matter) whose
    # weights still have a finite variance (so the Monte-Carlo check of E[w] = p(x) is trustworthy)
    loc, scale = jnp.asarray(mean + 0.5), jnp.asarray(1.5 * np.sqrt(np.diag(cov)))
    fn = jax.jit(jax.vmap(lambda key: mcvae.log_weight(target, loc, scale, kernel, key)[:2]))
    log_w, info = fn(jax.random.split(jax.random.key(seed), n))
    return np.asarray(log_w), info


@pytest.mark.parametrize("kind", mcvae.KINDS)
def test_unbiased_weights_bound_and_tightening(kind, x64):
    log_px = exact_log_px()
    means = {}
    for k in (1, 10):
        log_w, _ = draws(kind, k)
        w = np.exp(log_w - log_px)
        se_w = w.std() / math.sqrt(w.size)
        assert abs(w.mean() - 1) <= N_SE * se_w, f"{kind} K={k}: mean w/p(x) = {w.mean():.4f} (se {se_w:.3f})"
        se = log_w.std() / math.sqrt(log_w.size)
        assert log_w.mean() <= log_px + N_SE * se, f"{kind} K={k}: bound {log_w.mean():.3f} > log p(x) {log_px:.3f}"
        means[k] = (log_w.mean(), se)
    (m1, s1), (m10, s10) = means[1], means[10]
    assert m10 - m1 > N_SE * math.hypot(s1, s10), f"{kind}: no tightening, K=1 {m1:.3f} vs K=10 {m10:.3f}"


def test_bad_input():
    with pytest.raises(ValueError, match="K"):
        mcvae.MCVAEKernel(0, 0.1)
    with pytest.raises(ValueError, match="step sizes"):
        mcvae.MCVAEKernel(3, 0.0)
    with pytest.raises(ValueError, match="step sizes"):
        mcvae.MCVAEKernel(3, [0.1, -0.1, 0.1])
    with pytest.raises(ValueError, match="kind"):
        mcvae.MCVAEKernel(3, 0.1, "hamiltonian")


def test_nan_target_is_counted_rejection(x64):
    """A target that is NaN on part of the space: A-MCVAE rejects those proposals, counts them, and its weights
    stay finite and unbiased."""

    cut = posterior()[0][0] + 0.3

    def holey(z):
        return jnp.where(z[0] > cut, jnp.nan, log_joint(z))

    log_w, info = draws("annealed", 3, n=500, step=0.3, target=holey)
    # draws with z_0[0] > 1 start in the hole (NaN weight: q_0 puts mass there); the rest must be finite
    n_bad = np.asarray(info.n_nonfinite)
    assert n_bad.sum() > 0
    started_ok = np.isfinite(log_w)
    assert started_ok.mean() > 0.3
    assert np.all(np.asarray(info.position)[started_ok, 0] <= cut)
