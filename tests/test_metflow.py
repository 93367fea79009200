"""MetFlow (dgm.vi.metflow) against exact answers.

* A 1-D Gaussian target ``pi~ = Z N(m, s^2)``, ``q_0 = N(mu_0, sigma_0^2)`` and an affine flow ``T(x) = c x + d``
  (flowjax ``Affine``), ``K = 2`` kernels: the auxiliary ELBO by its definition -- a sum over the ``2^K`` directions
  and ``2^K`` accept/reject paths of ``P(path) log(pi~(x_K) m(a) / q_K(x_K, a | v))`` integrated over ``x_0`` on a
  fine grid (numpy, written independently of the implementation) -- must equal the Monte-Carlo mean of the
  implementation's ``log w`` within 4 MCSE, ``E[w] = Z`` likewise, and the mean of the gradient estimator
  (reparameterisation + score term) must match central finite differences of the brute-force ELBO within 4 MCSE.
  Without the score term (pathwise gradient only) the flow offset's gradient is 6 MCSE off -- asserted, so the
  check is shown to have the power to see a wrong estimator.  With Metropolis-Hastings acceptance instead of Barker's
  the implementation's mean log w is 19 MCSE below the Barker brute force (checked by hand at c = 1.3, d = 0.4), and the brute force
  itself shows ``E[w] < Z`` for MH (asserted).
* Invariance: 128 chains started from exact draws of a 2-D banana run 300 MetFlow transitions with a random
  noise-conditioned RealNVP; the first and second moments stay within 4 MCSE of the exact ones, and the same check
  rejects the kernel whose acceptance ratio omits the Jacobian (tens of MCSE off).
* Bad input: ``K < 1`` is a ``ValueError``; a target returning NaN gives counted rejections, never NaN positions.
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
import pytest

from conftest import mcse
from dgm.vi import metflow as mf

N_SE = 4.0
M, S, LOG_Z = 1.0, 0.7, 0.3  # target: exp(LOG_Z) N(M, S^2)
MU0, SIGMA0 = -0.5, 1.2  # q_0
K = 2


def log_target(x):
    r = (x[0] - M) / S
    return LOG_Z - 0.5 * r * r - math.log(S) - 0.5 * math.log(2 * math.pi)


def affine_metflow(c=0.6, d=1.5, acceptance="barker"):
    from flowjax.bijections import Affine

    return mf.MetFlow(Affine(jnp.full(1, d), jnp.full(1, c)), acceptance=acceptance)


def brute_force_elbo(metflow, barker=True):
    """The auxiliary ELBO and E[w] by enumeration of (directions, decisions) and a grid over x_0 (numpy, float64);
    Barker's acceptance function (the default) or Metropolis-Hastings'."""
    flow = paramax.unwrap(metflow.flow)
    c, d = float(flow.scale[0]), float(flow.loc[0])
    x0 = np.linspace(MU0 - 12 * SIGMA0, MU0 + 12 * SIGMA0, 20001)
    dx = x0[1] - x0[0]
    log_q0 = -0.5 * ((x0 - MU0) / SIGMA0) ** 2 - math.log(SIGMA0) - 0.5 * math.log(2 * math.pi)
    lt = lambda x: LOG_Z - 0.5 * ((x - M) / S) ** 2 - math.log(S) - 0.5 * math.log(2 * math.pi)  # noqa: E731
    elbo = np.zeros_like(x0)
    mean_w = np.zeros_like(x0)
    for v in itertools.product((1, -1), repeat=K):
        for a in itertools.product((1, 0), repeat=K):
            x, log_jac, log_prob = x0.copy(), 0.0, np.zeros_like(x0)
            for vk, ak in zip(v, a):
                y, ld = (c * x + d, math.log(c)) if vk == 1 else ((x - d) / c, -math.log(c))
                r = np.exp(lt(y) - lt(x) + ld)
                alpha = r / (1 + r) if barker else np.minimum(1.0, r)
                if ak:
                    with np.errstate(divide="ignore"):
                        log_prob = log_prob + np.log(alpha)
                    x, log_jac = y, log_jac + ld
                else:
                    with np.errstate(divide="ignore"):
                        log_prob = log_prob + np.log1p(-alpha)  # -inf where alpha = 1: a path of probability 0
            # q_K(x_K, a | v) = q_0(x_0) |dx_K/dx_0|^{-1} P(a | ...);   m(a) = 2^-K
            possible = np.isfinite(log_prob)
            log_prob = np.where(possible, log_prob, 0.0)
            log_w = lt(x) - K * math.log(2) - (log_q0 - log_jac + log_prob)
            p = np.where(possible, 0.5**K * np.exp(log_prob), 0.0)
            elbo += p * log_w
            mean_w += np.where(possible, 0.5**K * np.exp(lt(x) - K * math.log(2) - log_q0 + log_jac), 0.0)
    q0 = np.exp(log_q0)
    return float(np.sum(q0 * elbo) * dx), float(np.sum(q0 * mean_w) * dx)


def estimator(metflow, key, n, baseline, score_term=True):
    """``n`` draws of (log w, gradient estimate w.r.t. the flow's parameters); ``score_term=False``: the pathwise
    gradient alone (wrong: it ignores how the decisions' probabilities depend on the parameters)."""
    params, static = eqx.partition(metflow, eqx.is_inexact_array)

    def one(p, key):
        k0, k1 = jax.random.split(key)
        x0 = MU0 + SIGMA0 * jax.random.normal(k0, (1,))
        log_q0 = -0.5 * ((x0[0] - MU0) / SIGMA0) ** 2 - math.log(SIGMA0) - 0.5 * math.log(2 * math.pi)
        log_w, score, _ = mf.log_weight(eqx.combine(p, static), log_target, x0, log_q0, k1, K)
        return (mf.surrogate(log_w, score, baseline) if score_term else log_w), log_w

    grad_fn = jax.vmap(jax.grad(lambda p, k: one(p, k)[0]), in_axes=(None, 0))
    keys = jax.random.split(key, n)
    log_w = jax.vmap(lambda k: one(params, k)[1])(keys)
    return np.asarray(log_w), grad_fn(params, keys)


def test_elbo_and_gradient_match_brute_force(x64):
    metflow = mf.astype(affine_metflow(), jnp.float64)
    exact_elbo, exact_mean_w = brute_force_elbo(metflow)
    assert exact_mean_w == pytest.approx(math.exp(LOG_Z), rel=1e-6)  # Barker: every path possible, E[w] = Z
    # Metropolis-Hastings: no rejection where r >= 1, so q_K misses paths the extended target charges: E[w] < Z
    assert brute_force_elbo(metflow, barker=False)[1] < 0.9 * math.exp(LOG_Z)
    log_w, grads = estimator(metflow, jax.random.key(0), 20_000, exact_elbo)
    se = log_w.std() / math.sqrt(log_w.size)
    assert abs(log_w.mean() - exact_elbo) <= N_SE * se, (log_w.mean(), exact_elbo, se)
    w = np.exp(log_w)
    assert abs(w.mean() - math.exp(LOG_Z)) <= N_SE * w.std() / math.sqrt(w.size)

    # gradient: mean estimator vs central finite differences of the brute-force ELBO, per parameter
    params, static = eqx.partition(metflow, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    g_leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 2  # the Affine's offset and (unconstrained) scale
    h, fds = 1e-4, []
    for i, (leaf, g) in enumerate(zip(leaves, g_leaves)):
        bumped = []
        for sign in (1, -1):
            new = list(leaves)
            new[i] = leaf + sign * h
            bumped.append(brute_force_elbo(eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static))[0])
        fd = (bumped[0] - bumped[1]) / (2 * h)
        g = np.asarray(g).reshape(-1)
        se_g = g.std() / math.sqrt(g.size)
        assert abs(g.mean() - fd) <= N_SE * se_g + 1e-6, f"parameter {i}: estimator {g.mean():.4f} vs FD {fd:.4f}"
        fds.append(fd)
    # the score term matters: without it the offset's gradient is biased (6 MCSE off here; full estimator < 1 MCSE)
    _, pathwise = estimator(metflow, jax.random.key(0), 20_000, exact_elbo, score_term=False)
    g = np.asarray(jax.tree_util.tree_leaves(pathwise)[0]).reshape(-1)
    assert abs(g.mean() - fds[0]) > N_SE * g.std() / math.sqrt(g.size)


def _banana(x):
    return -0.5 * x[0] ** 2 - 0.5 * ((x[1] - 0.5 * x[0] ** 2) / 0.5) ** 2


@jax.jit
def _banana_chains(wrong_ratio):
    flow = mf.realnvp(jax.random.key(3), 2, n_layers=2, width=16, noise_dim=2)
    p, st = eqx.partition(flow, eqx.is_inexact_array)
    p = jax.tree_util.tree_map(lambda v: v + 0.4 * jax.random.normal(jax.random.key(7), v.shape), p)
    step = mf.build_kernel(mf.MetFlow(eqx.combine(p, st), 2), _banana, wrong_ratio=wrong_ratio)

    def chain(key, x0):
        def body(state, k):
            state, _ = step(k, state)
            return state, state.position

        return jax.lax.scan(body, mf.init(x0, _banana), jax.random.split(key, 300))[1]

    k1, k2 = jax.random.split(jax.random.key(0))
    z = jax.random.normal(k1, (128, 2))
    x0 = jnp.stack([z[:, 0], 0.5 * z[:, 0] ** 2 + 0.5 * z[:, 1]], -1)  # exact draws: a stationary start
    return jax.vmap(chain)(jax.random.split(k2, 128), x0)


def _banana_moments(wrong_ratio):
    xs = np.asarray(_banana_chains(jnp.asarray(wrong_ratio)), np.float64)  # one compilation for both kernels
    x1, x2 = xs[..., 0], xs[..., 1]
    # exact: x1 ~ N(0, 1), x2 = x1^2 / 2 + N(0, 1/4): E x2 = 1/2, E x1^2 = 1, E x2^2 = 3/4 + 1/4, E x1 x2 = 0
    stats = {"x1": (x1, 0.0), "x2": (x2, 0.5), "x1^2": (x1**2, 1.0), "x2^2": (x2**2, 1.0), "x1 x2": (x1 * x2, 0.0)}
    return {name: abs(d.mean() - exact) / mcse(d) for name, (d, exact) in stats.items()}


def test_kernel_leaves_banana_invariant_and_wrong_ratio_is_caught():
    good = _banana_moments(False)
    assert max(good.values()) <= N_SE, good
    bad = _banana_moments(True)  # acceptance ratio without |det dT/dx|: not pi-invariant
    assert max(bad.values()) > 5 * N_SE, bad


def test_bad_input_and_nan_target():
    metflow = affine_metflow()
    with pytest.raises(ValueError, match="n_steps"):
        mf.path(metflow, log_target, jnp.zeros(1), jax.random.key(0), 0)
    with pytest.raises(ValueError, match="n_steps"):
        mf.path(metflow, log_target, jnp.zeros(1), jax.random.key(0), -3)

    def holey(x):  # NaN to the right of 1
        return jnp.where(x[0] > 1.0, jnp.nan, log_target(x))

    x0 = jnp.full(1, 0.9)  # T(0.9) = 1.57: always NaN forward, finite backward
    infos = jax.vmap(lambda k: mf.path(metflow, holey, x0, k, 5))(jax.random.split(jax.random.key(1), 200))
    assert int(infos.n_nonfinite.sum()) > 0
    assert np.all(np.isfinite(np.asarray(infos.position)))
    assert np.all(np.asarray(infos.position) <= 1.0)


def test_fit_improves_the_elbo_and_reports_progress(capsys):
    """Training on a fixed 2-D Gaussian target raises MetFlow's ELBO (float32, the default) and shows a bar."""
    from dgm.vi import target_fit as tf

    def gauss(x):
        r = (x - jnp.array([1.0, -1.0])) / jnp.array([0.5, 2.0])
        return -0.5 * jnp.sum(r * r) - math.log(0.5 * 2.0) - math.log(2 * math.pi)

    family = tf.metflow_family(gauss, 2, 2, key=jax.random.key(0), n_layers=2, width=8)
    result = tf.fit(family, steps=80, batch=64, learning_rate=1e-2, chunk=40, progress=True)
    assert result.elbo_trace.shape == (2,) and np.all(np.isfinite(result.elbo_trace))
    assert result.elbo_trace[-1] > result.elbo_trace[0] + 0.2
    assert "fit MetFlow" in capsys.readouterr().err
    x, log_w = tf.draws(family, result.params, 500)
    assert x.shape == (500, 2) and x.dtype == np.float32
    assert tf.log_z_estimate(log_w) < 0.5  # log Z = 0; a lower bound up to Monte-Carlo error
    with pytest.raises(ValueError, match="steps"):
        tf.fit(family, steps=0)
