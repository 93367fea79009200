"""Tests for dgm.vi.nondiff (Lee, Yu & Yang 2018: reparameterisation gradient for non-differentiable models).

Exact ELBO gradients come from quadrature in float64 (scipy.integrate.quad in 1-D; piecewise Gauss-Legendre in
rotated coordinates, split exactly at the branch hyperplanes, in 2-D), never from the boundary-term formula itself:
``grad ELBO = int log p(z) grad_theta q_theta(z) dz + grad H[q_theta]`` (the regions do not move in z-space).
Monte Carlo means are compared within 4 standard errors; all keys are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import integrate, optimize, stats

from dgm.vi.nondiff import (
    FullRankGaussian,
    MeanFieldGaussian,
    PiecewiseModel,
    Reparameterisation,
    ReparameterisationBoundary,
    ScoreFunction,
    boundary_term_samples,
    fit,
    from_pieces,
    hyperplane_masses,
    project_to_hyperplane,
)
from dgm.vi.nondiff import examples as ex

NUM = 20_000
C1 = stats.norm.logpdf(0.0, 3.0, 1.0)  # log N(0; 3, 1), branch z > 0
C2 = stats.norm.logpdf(0.0, -2.0, 1.0)  # log N(0; -2, 1), branch z <= 0


SLIDES = ex.slides_example()
TILTED = ex.tilted_2d_example()


@functools.partial(jax.jit, static_argnames=("estimator", "model", "family", "num"))
def _run(params, key, *, estimator, model, family, num):
    return estimator(model, family, params, key, num)


def mc_stats(estimator, model, family, params, seed, num=NUM):
    est = _run(params, jax.random.PRNGKey(seed), estimator=estimator, model=model, family=family, num=num)
    per = np.asarray(est.per_sample)
    np.testing.assert_allclose(per.mean(0), ravel_pytree(est.grad)[0], rtol=1e-10, atol=1e-12)
    return per.mean(0), per.std(0, ddof=1) / math.sqrt(num), per.var(0, ddof=1)


# --------------------------------------------------------------------------------------------------------------
# slides' example: z ~ N(0,1); if z > 0 observe N(3,1) at 0 else observe N(-2,1) at 0; q = N(mu, sigma^2)
# --------------------------------------------------------------------------------------------------------------
def slides_exact_grad_quad(mu, sigma):
    """(d/dmu, d/dlog sigma) of the ELBO by scipy quad, split at the branch point z = 0."""

    def log_p(z):
        return stats.norm.logpdf(z) + (C1 if z > 0 else C2)

    def dq(z, which):
        q = stats.norm.pdf(z, mu, sigma)
        r = (z - mu) / sigma
        return q * (r / sigma if which == 0 else r * r - 1.0)

    out = []
    for which in (0, 1):
        f = lambda z: log_p(z) * dq(z, which)  # noqa: E731
        val = integrate.quad(f, -np.inf, 0.0, epsabs=1e-13, epsrel=1e-12)[0]
        val += integrate.quad(f, 0.0, np.inf, epsabs=1e-13, epsrel=1e-12)[0]
        out.append(val)
    out[1] += 1.0  # d H / d log sigma
    return np.array(out)


def slides_elbo_closed_form(mu, sigma):
    r = mu / sigma
    e_log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * (mu**2 + sigma**2)
    return e_log_prior + stats.norm.cdf(r) * C1 + stats.norm.sf(r) * C2 + math.log(sigma) + 0.5 * (1 + math.log(2 * math.pi))


def slides_grad_closed_form(mu, sigma):
    r = mu / sigma
    d_mu = -mu + stats.norm.pdf(r) / sigma * (C1 - C2)
    d_sigma = -sigma - stats.norm.pdf(r) * mu / sigma**2 * (C1 - C2)
    return np.array([d_mu, sigma * d_sigma + 1.0])


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (0.5, 0.8)])
def test_slides_quadrature_matches_closed_form(mu, sigma):
    np.testing.assert_allclose(slides_exact_grad_quad(mu, sigma), slides_grad_closed_form(mu, sigma), atol=1e-9)


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (0.5, 0.8)])
def test_slides_example_estimators(mu, sigma):
    with jax.enable_x64(True):
        model, fam = SLIDES, MeanFieldGaussian(1)
        params = fam.init(mu, sigma)
        exact = slides_exact_grad_quad(mu, sigma)
        flat_order = list(sorted(params))  # ravel_pytree orders dict keys: log_scale, mean
        exact = exact[[1, 0]] if flat_order == ["log_scale", "mean"] else exact

        new_m, new_se, new_var = mc_stats(ReparameterisationBoundary(), model, fam, params, 1)
        score_m, score_se, score_var = mc_stats(ScoreFunction(), model, fam, params, 2)
        plain_m, plain_se, _ = mc_stats(Reparameterisation(), model, fam, params, 3)

        z_new = np.abs(new_m - exact) / new_se
        z_score = np.abs(score_m - exact) / score_se
        z_plain = np.abs(plain_m - exact) / plain_se
        print(f"\nslides theta=({mu}, {sigma}) exact={exact} new={new_m}+-{new_se} score={score_m}+-{score_se} "
              f"plain={plain_m}+-{plain_se} | plain bias in s.e.: {z_plain}")
        assert np.all(z_new < 4.0), z_new
        assert np.all(z_score < 4.0), z_score
        # the plain estimator's mean is many standard errors away from the truth in the mean component
        i_mean = flat_order.index("mean")
        assert z_plain[i_mean] > 20.0, z_plain
        assert abs(plain_m[i_mean] - exact[i_mean]) > 0.3
        # the score function is unbiased but much noisier
        assert np.all(score_var > 5.0 * new_var), (score_var, new_var)


def test_slides_fit_reaches_optimum_plain_does_not():
    with jax.enable_x64(True):
        model, fam = SLIDES, MeanFieldGaussian(1)
        res = optimize.minimize(lambda t: -slides_elbo_closed_form(t[0], math.exp(t[1])), [0.0, 0.0])
        best = -res.fun
        out = {}
        for name, est in [("new", ReparameterisationBoundary()), ("plain", Reparameterisation())]:
            r = fit(model, fam, fam.init(0.0, 1.0), est, jax.random.PRNGKey(0), num_steps=600, num_samples=16,
                    learning_rate=0.05)
            assert r.elbo.shape == (600,) and r.grad_var.shape == (600, 2)
            assert np.all(np.isfinite(np.asarray(r.grad_var)))
            p = r.params
            out[name] = slides_elbo_closed_form(float(p["mean"][0]), float(jnp.exp(p["log_scale"][0])))
        print(f"\nslides optimum ELBO {best:.4f}; fitted: new {out['new']:.4f}, plain {out['plain']:.4f}")
        assert out["new"] > best - 0.01
        assert out["plain"] < best - 0.1


# --------------------------------------------------------------------------------------------------------------
# 2-D example: tilted hyperplane + nested perpendicular one; exact gradient by 2-D quadrature
# --------------------------------------------------------------------------------------------------------------
def _gauss_legendre(a, b, n):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


def rotated_grid(family, params, n=120, width=12.0):
    """Nodes/weights on R^2 in coordinates u = n1.z, v = n2.z (orthonormal), each axis split at the hyperplane."""
    n_hat = ex.TILTED_NORMALS / np.linalg.norm(ex.TILTED_NORMALS, axis=1, keepdims=True)
    c = -ex.TILTED_OFFSETS / np.linalg.norm(ex.TILTED_NORMALS, axis=1)
    mu = np.asarray(params["mean"])
    L = np.asarray(family.scale_tril(params))
    m = n_hat @ mu
    s = np.sqrt(np.sum((n_hat @ L) ** 2, axis=1))
    axes = []
    for i in range(2):
        lo, hi = min(c[i], m[i] - width * s[i]) - 1e-3, max(c[i], m[i] + width * s[i]) + 1e-3
        xa, wa = _gauss_legendre(lo, c[i], n)
        xb, wb = _gauss_legendre(c[i], hi, n)
        axes.append((np.concatenate([xa, xb]), np.concatenate([wa, wb])))
    (u, wu), (v, wv) = axes
    U, V = np.meshgrid(u, v, indexing="ij")
    W = np.outer(wu, wv).ravel()
    Z = U.ravel()[:, None] * n_hat[0] + V.ravel()[:, None] * n_hat[1]
    return jnp.asarray(Z), jnp.asarray(W)


def exact_grad_2d(model, family, params):
    """int log p grad q dz + grad H, and the plain reparameterisation's expectation int q grad_theta f(T(eps(z)))."""
    Z, W = rotated_grid(family, params)
    exact, plain, mass = _quadrature_2d(params, Z, W, model=model, family=family)
    return np.asarray(exact), np.asarray(plain), float(mass)


@functools.partial(jax.jit, static_argnames=("model", "family"))
def _quadrature_2d(params, Z, W, *, model, family):
    log_p = jax.vmap(model.log_joint)(Z)
    q = jnp.exp(jax.vmap(lambda z: family.log_prob(params, z))(Z))
    score = jax.vmap(lambda z: ravel_pytree(jax.grad(family.log_prob)(params, z))[0])(Z)
    ent = ravel_pytree(jax.grad(family.entropy)(params))[0]
    exact = jnp.sum((W * q * log_p)[:, None] * score, axis=0) + ent

    def plain_at(z):
        eps = jax.lax.stop_gradient(family.inverse(params, z))
        return ravel_pytree(jax.grad(lambda p: model.log_joint(family.transform(p, eps)))(params))[0]

    plain = jnp.sum((W * q)[:, None] * jax.vmap(plain_at)(Z), axis=0) + ent
    return exact, plain, jnp.sum(W * q)


def params_2d(kind):
    if kind == "meanfield":
        fam = MeanFieldGaussian(2)
        p = fam.init(jnp.array([0.2, -0.1]), jnp.array([0.9, 1.2]))
    else:
        fam = FullRankGaussian(2)
        p = fam.init(jnp.array([0.2, -0.1]), jnp.array([0.9, 1.2]))
        p = {"mean": p["mean"], "tril": p["tril"].at[1].set(0.4)}  # L = [[0.9, 0], [0.4, 1.2]]
    return fam, p


VARIANTS = [ReparameterisationBoundary("uniform"), ReparameterisationBoundary("weighted"), ScoreFunction(baseline=True)]


@pytest.mark.parametrize(
    "kind,variants",
    [("meanfield", False), ("fullrank", False), ("meanfield", True),
     pytest.param("fullrank", True, marks=pytest.mark.slow)],
)
def test_tilted_2d_estimators(kind, variants):
    """Unbiased estimators agree with 2-D quadrature (mean and scale/Cholesky components); plain is biased."""
    with jax.enable_x64(True):
        model = TILTED
        fam, params = params_2d(kind)
        exact, plain_exact, mass = exact_grad_2d(model, fam, params)
        assert abs(mass - 1.0) < 1e-10
        if variants:  # other boundary-sampling modes and the baseline score function
            for seed, est in enumerate(VARIANTS):
                m, se, _ = mc_stats(est, model, fam, params, 30 + seed)
                z = np.abs(m - exact) / se
                print(f"\n{kind} {est}: max |mean - exact| / se = {z.max():.2f}")
                assert np.all(z < 4.0), (est, m, exact, se)
            return
        for seed, est in enumerate([ReparameterisationBoundary("sum"), ScoreFunction()]):
            m, se, _ = mc_stats(est, model, fam, params, 10 + seed)
            z = np.abs(m - exact) / se
            print(f"\n{kind} {est}: max |mean - exact| / se = {z.max():.2f}")
            assert np.all(z < 4.0), (est, m, exact, se)
        m, se, plain_var = mc_stats(Reparameterisation(), model, fam, params, 20)
        # plain reparameterisation is unbiased for its own (wrong) target, and far from the true gradient
        assert np.all(np.abs(m - plain_exact) / se < 4.0)
        z_plain = np.abs(m - exact) / se
        print(f"{kind} plain bias in s.e.: {z_plain}")
        assert z_plain.max() > 20.0
        _, _, new_var = mc_stats(ReparameterisationBoundary(), model, fam, params, 21)
        _, _, score_var = mc_stats(ScoreFunction(), model, fam, params, 22)
        print(f"{kind} per-sample variance score / new: {score_var / new_var}")
        assert np.all(score_var > 2.0 * new_var), (score_var, new_var)


def test_boundary_term_matches_quadrature_fullrank():
    """The boundary term alone equals (exact gradient) - (plain reparameterisation expectation)."""
    with jax.enable_x64(True):
        model = TILTED
        fam, params = params_2d("fullrank")
        exact, plain_exact, _ = exact_grad_2d(model, fam, params)
        per = np.asarray(jax.jit(lambda p, k: boundary_term_samples(model, fam, p, k, NUM, "sum"))(
            params, jax.random.PRNGKey(5)))
        m, se = per.mean(0), per.std(0, ddof=1) / math.sqrt(NUM)
        target = exact - plain_exact
        assert np.all(np.abs(m - target) <= 4.0 * se + 1e-12), (m, target, se)
        assert np.max(np.abs(target)) > 0.1


# --------------------------------------------------------------------------------------------------------------
# pieces of the machinery
# --------------------------------------------------------------------------------------------------------------
def test_hyperplane_conditional_sampling_and_mass():
    with jax.enable_x64(True):
        model = TILTED
        fam, params = params_2d("fullrank")
        L = np.asarray(fam.scale_tril(params))
        mu = np.asarray(params["mean"])
        n_hat, c = model.unit_hyperplanes()
        masses = np.asarray(hyperplane_masses(model, fam, params))
        eps = np.asarray(fam.sample_eps(jax.random.PRNGKey(0), (50_000,)))
        z = eps @ L.T + mu
        for k in range(2):
            nk, ck = np.asarray(n_hat[k]), float(c[k])
            # mass = density of n.z at c, checked by a narrow-band Monte Carlo estimate
            band = np.mean(np.abs(z @ nk - ck) < 0.05) / 0.1
            assert abs(band - masses[k]) < 0.03
            w, t = nk @ L, ck - nk @ mu
            on = jax.vmap(lambda e: project_to_hyperplane(jnp.asarray(w), t, e))(jnp.asarray(eps))
            zon = np.asarray(on) @ L.T + mu
            np.testing.assert_allclose(zon @ nk, ck, atol=1e-12)
            # conditional Gaussian moments: mean mu + S n (c - n.mu)/(n S n), cov S - S n n S / (n S n)
            S = L @ L.T
            s2 = nk @ S @ nk
            mean_c = mu + S @ nk * (ck - nk @ mu) / s2
            cov_c = S - np.outer(S @ nk, S @ nk) / s2
            np.testing.assert_allclose(zon.mean(0), mean_c, atol=0.03)
            np.testing.assert_allclose(np.cov(zon.T), cov_c, atol=0.05)


def test_from_pieces_selection_and_coverage():
    pieces = [("+.", lambda z: z[0]), ("-+", lambda z: 10.0 + z[0]), ("--", lambda z: 20.0 + z[0])]
    m = from_pieces(np.eye(2), [0.0, 0.0], pieces)
    assert float(m.log_joint(jnp.array([1.0, -1.0]))) == 1.0
    assert float(m.log_joint(jnp.array([1.0, 1.0]))) == 1.0
    assert float(m.log_joint(jnp.array([-1.0, 1.0]))) == 9.0
    assert float(m.log_joint(jnp.array([-1.0, -1.0]))) == 19.0
    # nested: across H_2 the value only jumps inside the else branch of the first test
    np.testing.assert_allclose(m.jumps(jnp.array([1.0, 0.0])), [1.0 - 21.0, 0.0], atol=1e-6)  # s = (+, -)
    np.testing.assert_allclose(m.jumps(jnp.array([-1.0, 0.0])), [-1.0 - 19.0, 9.0 - 19.0], atol=1e-6)
    with pytest.raises(ValueError, match="no piece covers"):
        from_pieces(np.eye(2), [0.0, 0.0], pieces[:2])
    with pytest.raises(ValueError):
        PiecewiseModel(np.zeros((1, 2)), [0.0], lambda z, s: 0.0)


def test_float32_and_examples_run():
    """Default float32 works; the benchmark models evaluate and their estimators are finite."""
    for model, fam in [
        (ex.sms_changepoint(), MeanFieldGaussian(3)),
        (ex.thermostat(num_steps=12)[0], MeanFieldGaussian(12)),
    ]:
        params = fam.init(jnp.zeros(fam.dim) + (20.0 if model.name == "thermostat" else 2.9), 0.5)
        for est in [ReparameterisationBoundary("weighted")]:
            g = jax.jit(lambda p, k: est(model, fam, p, k, 4))(params, jax.random.PRNGKey(0))
            assert g.per_sample.dtype == jnp.float32
            assert np.all(np.isfinite(np.asarray(g.per_sample))) and np.isfinite(float(g.elbo))
