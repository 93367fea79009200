"""von Mises: CDF accuracy, implicit gradients in the concentration, sampler, batching, bad input.

References are independent of the library: the CDF by adaptive quadrature of the density (scipy.integrate.quad,
relative tolerance 1e-13, integrating over whichever side of the sign change of the integrand avoids cancellation)
and its kappa-derivative by a 5-point central difference (h = 1e-3 kappa, truncation error ~ (h/kappa)^4).
Statistical tests use fixed seeds and state their tolerance in Monte-Carlo standard errors (4 SE).
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
import scipy.special as ss
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hst

from dgm.vi.implicit import implicit_derivatives
from dgm.vi.von_mises import (
    KAPPA_SWITCH,
    VonMises,
    rsample_von_mises,
    sample_von_mises,
    von_mises_cdf,
    von_mises_log_prob,
)


# ----------------------------------------------------------------------------------------------------------------------
# independent high-precision reference
# ----------------------------------------------------------------------------------------------------------------------
def _pdf(t, k):
    return np.exp(k * (np.cos(t) - 1.0)) / (2.0 * np.pi * ss.i0e(k))


def _quad(f, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return si.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=400)[0]


def ref_dF_dkappa(x: float, k: float) -> float:
    """dF(x | 0, k)/dk, 5-point central difference of a quadrature CDF without cancellation."""
    ax = abs(x)
    t0 = math.acos(ss.i1e(k) / ss.i0e(k))  # where d pdf / dk changes sign
    h = 1e-3 * k
    if ax <= t0:
        f = lambda kk: _quad(lambda t: _pdf(t, kk), 0.0, ax)  # F - 1/2
    else:
        f = lambda kk: -_quad(lambda t: _pdf(t, kk), ax, math.pi)  # F - 1 (up to a constant)
    d = (f(k - 2 * h) - 8 * f(k - h) + 8 * f(k + h) - f(k + 2 * h)) / (12 * h)
    return math.copysign(d, x)  # F(-x) = 1 - F(x)


def ref_dz_dkappa(x: float, k: float) -> float:
    return -ref_dF_dkappa(x, k) / _pdf(x, k)


def mean_cos(k):
    return ss.i1e(k) / ss.i0e(k)


def dmean_cos(k):
    a = mean_cos(k)
    return 1.0 - a / k - a * a


# ----------------------------------------------------------------------------------------------------------------------
# accuracy of the implicit gradient (float64)
# ----------------------------------------------------------------------------------------------------------------------
KAPPAS = [float(k) for k in np.geomspace(1e-2, 1e3, 11)] + [KAPPA_SWITCH * (1 - 1e-9), KAPPA_SWITCH]


def test_dz_dkappa_matches_quadrature_reference_float64():
    """max relative error of dz/dkappa at sampled points <= 1e-6 for kappa in [1e-2, 1e3] (typically ~1e-11)."""
    worst = 0.0
    with jax.enable_x64(True):
        jac = jax.jit(jax.jacfwd(lambda k, key: rsample_von_mises(key, 0.0, k, (12,))))
        draw = jax.jit(lambda k, key: rsample_von_mises(key, 0.0, k, (12,)))
        for i, k in enumerate(KAPPAS):
            key = jax.random.PRNGKey(100 + i)
            z = np.asarray(draw(k, key))
            g = np.asarray(jac(k, key))
            ref = np.array([ref_dz_dkappa(float(x), k) for x in z])
            rel = np.abs(g - ref) / np.abs(ref)
            worst = max(worst, float(rel.max()))
            assert rel.max() <= 1e-6, (k, z[np.argmax(rel)], rel.max())
    print(f"von Mises max relative error of dz/dkappa over {len(KAPPAS)} kappas: {worst:.2e}")


@pytest.mark.parametrize("k", [0.3, 5.0, 19.0, 25.0, 200.0])
def test_dz_dkappa_tails(k):
    """Deterministic points from the mode to 6 standard deviations (tail probability ~1e-9)."""
    with jax.enable_x64(True):
        sd = min(1.0 / math.sqrt(k), 1.0)
        xs = np.array([-6, -3.5, -1, -0.05, 0.02, 0.7, 2.5, 5, 6]) * sd
        xs = xs[np.abs(xs) < math.pi]
        coef = implicit_derivatives(lambda z, kk: von_mises_cdf(z, 0.0, kk), jnp.asarray(xs), jnp.asarray(k),
                                    lambda z, kk: von_mises_log_prob(z, 0.0, kk))
        ref = np.array([ref_dz_dkappa(float(x), k) for x in xs])
        np.testing.assert_allclose(np.asarray(coef), ref, rtol=1e-7)


def test_cdf_values_against_quadrature():
    with jax.enable_x64(True):
        for k in [0.01, 1.0, 10.0, 19.99, 20.0, 60.0, 1000.0]:
            xs = np.linspace(-3.1, 3.1, 9) * min(1.0, 3.0 / math.sqrt(k))
            ref = np.array([0.5 + math.copysign(_quad(lambda t: _pdf(t, k), 0.0, abs(x)), x) for x in xs])
            np.testing.assert_allclose(np.asarray(von_mises_cdf(xs, 0.0, k)), ref, rtol=1e-12, atol=1e-14)


def test_continuity_at_switch():
    with jax.enable_x64(True):
        xs = jnp.linspace(-1.2, 1.2, 13)
        lo, hi = KAPPA_SWITCH * (1 - 1e-12), KAPPA_SWITCH
        np.testing.assert_allclose(von_mises_cdf(xs, 0.0, lo), von_mises_cdf(xs, 0.0, hi), rtol=0, atol=1e-13)
        d = jax.vmap(jax.grad(von_mises_cdf, 2), (0, None, None))
        np.testing.assert_allclose(d(xs, 0.0, lo), d(xs, 0.0, hi), rtol=1e-9, atol=1e-15)


def test_kappa_zero_exact():
    """kappa = 0: uniform CDF and dz/dkappa = -sin z exactly (F = 1/2 + x/2pi + sin(x)kappa/(2pi) + O(kappa^2))."""
    with jax.enable_x64(True):
        xs = jnp.linspace(-3.0, 3.0, 7)
        np.testing.assert_allclose(von_mises_cdf(xs, 0.0, 0.0), (xs + np.pi) / (2 * np.pi), rtol=1e-15)
        key = jax.random.PRNGKey(0)
        z = rsample_von_mises(key, 0.0, 0.0, (64,))
        dz = jax.jacfwd(lambda k: rsample_von_mises(key, 0.0, k, (64,)))(0.0)
        np.testing.assert_allclose(dz, -np.sin(z), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------------------------------
# statistics (seeded; tolerance 4 Monte-Carlo standard errors)
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0.05, 1.0, 8.0, 30.0, 300.0])
def test_mc_gradient_of_mean_cos(k):
    """d/dkappa E[cos z] = d/dkappa I1/I0 within 4 MC standard errors; reverse mode = mean of per-sample terms."""
    n = 100_000
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(int(k * 1000) % 2**31)
        z, dz = jax.jvp(lambda kk: rsample_von_mises(key, 0.0, kk, (n,)), (jnp.asarray(k),), (jnp.asarray(1.0),))
        g = -np.sin(np.asarray(z)) * np.asarray(dz)
        est, se = g.mean(), g.std(ddof=1) / math.sqrt(n)
        assert abs(est - dmean_cos(k)) <= 4 * se, (est, dmean_cos(k), se)
        c = np.cos(np.asarray(z))
        assert abs(c.mean() - mean_cos(k)) <= 4 * c.std(ddof=1) / math.sqrt(n)
        rev = jax.grad(lambda kk: jnp.mean(jnp.cos(rsample_von_mises(key, 0.0, kk, (n,)))))(jnp.asarray(k))
        np.testing.assert_allclose(float(rev), est, rtol=1e-10)


@pytest.mark.parametrize("k", [0.0, 0.5, 4.0, 19.5, 20.5, 150.0])
def test_sampler_probability_integral_transform(k):
    """F(z) ~ U(0,1): Kolmogorov-Smirnov with fixed seed (deterministic), p > 1e-3."""
    with jax.enable_x64(True):
        z = sample_von_mises(jax.random.PRNGKey(7), 0.3, k, (20_000,))
        u = np.asarray(von_mises_cdf(z, 0.3, k))
        assert st.kstest(u, "uniform").pvalue > 1e-3


# ----------------------------------------------------------------------------------------------------------------------
# location, generic rule, batching, jit, float32
# ----------------------------------------------------------------------------------------------------------------------
def test_location_gradient_is_one_and_matches_generic_rule():
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(3)
        loc, k = 0.4, 2.5
        z = rsample_von_mises(key, loc, k, (50,))
        dloc = jax.jacfwd(lambda m: rsample_von_mises(key, m, k, (50,)))(loc)
        np.testing.assert_allclose(dloc, 1.0, rtol=1e-14)
        dk = jax.jacfwd(lambda kk: rsample_von_mises(key, loc, kk, (50,)))(k)
        # generic implicit rule on F(z | loc, kappa), evaluated on the representative interval [loc - pi, loc + pi)
        zr = loc + jnp.mod(z - loc + np.pi, 2 * np.pi) - np.pi
        coef = implicit_derivatives(lambda zz, p: von_mises_cdf(zz, p[0], p[1]), zr, (jnp.asarray(loc), jnp.asarray(k)))
        np.testing.assert_allclose(coef[0], 1.0, rtol=1e-12)
        np.testing.assert_allclose(coef[1], dk, rtol=1e-10, atol=1e-14)


def test_batching_jit_vmap_and_distribution_object():
    with jax.enable_x64(True):
        loc = jnp.array([[0.0], [1.0], [-2.0]])
        kap = jnp.array([0.1, 3.0, 40.0, 900.0])
        d = VonMises(loc, kap)
        assert d.batch_shape == (3, 4) and d.event_shape == ()
        key = jax.random.PRNGKey(11)
        z = d.rsample(key, (5,))
        assert z.shape == (5, 3, 4)
        assert bool(jnp.all((z >= -np.pi) & (z < np.pi)))
        np.testing.assert_array_equal(jax.jit(lambda kk: VonMises(loc, kk).rsample(key, (5,)))(kap), z)
        assert d.log_prob(z).shape == (5, 3, 4)

        def loss(dist):
            return jnp.sum(jnp.cos(dist.rsample(key, (5,))) * jnp.arange(4.0))

        g = jax.jit(jax.grad(loss))(d)
        assert g.loc.shape == loc.shape and g.concentration.shape == kap.shape
        # reverse mode equals the forward-mode per-sample derivatives contracted with the cotangent
        dz = jax.jacfwd(lambda kk: VonMises(loc, kk).rsample(key, (5,)))(kap)  # (5,3,4,4)
        expected = jnp.einsum("sbkj,sbk->j", dz, -jnp.sin(z) * jnp.arange(4.0))
        np.testing.assert_allclose(g.concentration, expected, rtol=1e-10)
        # vmap over keys agrees with a loop
        keys = jax.random.split(key, 3)
        zv = jax.vmap(lambda kk: rsample_von_mises(kk, 0.0, 5.0, (4,)))(keys)
        for i in range(3):
            np.testing.assert_allclose(zv[i], rsample_von_mises(keys[i], 0.0, 5.0, (4,)), rtol=1e-13)


def test_float32_default_dtype():
    key = jax.random.PRNGKey(0)
    kap = jnp.array([1e-3, 0.5, 19.0, 21.0, 1e4], dtype=jnp.float32)
    z = rsample_von_mises(key, 0.0, kap, (200,))
    assert z.dtype == jnp.float32
    g = jax.grad(lambda k: jnp.sum(jnp.cos(rsample_von_mises(key, 0.0, k, (200,)))))(kap)
    assert bool(jnp.all(jnp.isfinite(g)))
    u = von_mises_cdf(z, 0.0, kap)
    assert bool(jnp.all((u >= 0) & (u <= 1)))


# ----------------------------------------------------------------------------------------------------------------------
# properties (hypothesis) and bad input
# ----------------------------------------------------------------------------------------------------------------------
_cdf64 = jax.jit(lambda x, k: von_mises_cdf(x, 0.0, k))


@settings(max_examples=40, deadline=None)
@given(k=hst.floats(0.0, 1e4), xs=hst.lists(hst.floats(-math.pi, math.pi), min_size=16, max_size=16))
def test_cdf_monotone_bounded_symmetric(k, xs):
    with jax.enable_x64(True):
        x = np.sort(np.asarray(xs))
        f = np.asarray(_cdf64(jnp.asarray(x), k))
        fm = np.asarray(_cdf64(jnp.asarray(-x), k))
        assert np.all((f >= 0) & (f <= 1))
        assert np.all(np.diff(f) >= -1e-15)
        np.testing.assert_allclose(f + fm, 1.0, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(k=hst.floats(0.0, 1e5), loc=hst.floats(-10.0, 10.0), seed=hst.integers(0, 2**31 - 1))
def test_rsample_in_support(k, loc, seed):
    with jax.enable_x64(True):
        z = _rs64(jax.random.PRNGKey(seed), loc, k)
        assert bool(jnp.all((z >= -np.pi) & (z < np.pi)))


_rs64 = jax.jit(lambda key, loc, k: rsample_von_mises(key, loc, k, (32,)))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_concentration_raises(bad):
    with pytest.raises(ValueError, match="concentration"):
        VonMises(0.0, bad)
    with pytest.raises(ValueError, match="concentration"):
        sample_von_mises(jax.random.PRNGKey(0), 0.0, jnp.array([1.0, bad]))
    with pytest.raises(ValueError, match="concentration"):
        rsample_von_mises(jax.random.PRNGKey(0), 0.0, bad)


def test_bad_concentration_under_jit_gives_nan_and_terminates():
    f = jax.jit(lambda k: rsample_von_mises(jax.random.PRNGKey(0), 0.0, k, (3,)))
    z = f(jnp.array([-1.0, 2.0]))
    assert bool(jnp.all(jnp.isnan(z[:, 0]))) and bool(jnp.all(jnp.isfinite(z[:, 1])))
    assert bool(jnp.isnan(jax.jit(von_mises_cdf)(0.3, 0.0, -2.0)))
