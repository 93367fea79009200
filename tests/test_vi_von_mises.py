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
    return np.exp(-2.0 * k * np.sin(0.5 * t) ** 2) / (2.0 * np.pi * ss.i0e(k))  # cos t - 1 without cancellation


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
# jitted building blocks shared by the tests (few compilations: they dominate the run time)
# ----------------------------------------------------------------------------------------------------------------------
@jax.jit
def _z_dz(key, loc, kappa):
    """Samples (12, K) and per-sample dz/dkappa, dz/dloc (forward mode, unit tangents: rsample is elementwise)."""
    f = lambda m, k: rsample_von_mises(key, m, k, (12,))
    z, dk = jax.jvp(lambda k: f(loc, k), (kappa,), (jnp.ones_like(kappa),))
    _, dm = jax.jvp(lambda m: f(m, kappa), (loc,), (jnp.ones_like(loc),))
    return z, dk, dm


@jax.jit
def _coef(x, loc, kappa):
    """Generic implicit rule on F(z | loc, kappa): (dz/dloc, dz/dkappa) at given points."""
    return implicit_derivatives(lambda z, p: von_mises_cdf(z, p[0], p[1]), x, (loc, kappa),
                                lambda z, p: von_mises_log_prob(z, p[0], p[1]))


# ----------------------------------------------------------------------------------------------------------------------
# accuracy of the implicit gradient (float64)
# ----------------------------------------------------------------------------------------------------------------------
KAPPAS = [float(k) for k in np.geomspace(1e-2, 1e3, 11)] + [KAPPA_SWITCH * (1 - 1e-9), KAPPA_SWITCH, 0.0]


def test_dz_dkappa_matches_quadrature_reference_float64():
    """max relative error of dz/dkappa at sampled points <= 1e-6 for kappa in [1e-2, 1e3] (typically ~1e-11);
    kappa = 0: dz/dkappa = -sin z exactly; dz/dloc = 1; the generic rule with (loc, kappa) gives the same."""
    with jax.enable_x64(True):
        kap = jnp.asarray(KAPPAS)
        loc = jnp.zeros_like(kap)
        z, dk, dm = (np.asarray(a) for a in _z_dz(jax.random.PRNGKey(100), loc, kap))
        worst = 0.0
        for j, k in enumerate(KAPPAS[:-1]):
            ref = np.array([ref_dz_dkappa(float(x), k) for x in z[:, j]])
            rel = np.abs(dk[:, j] - ref) / np.abs(ref)
            worst = max(worst, float(rel.max()))
            assert rel.max() <= 1e-6, (k, z[np.argmax(rel), j], rel.max())
        print(f"von Mises: max relative error of dz/dkappa over {len(KAPPAS) - 1} kappas: {worst:.2e}")
        np.testing.assert_allclose(dk[:, -1], -np.sin(z[:, -1]), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dm, 1.0, rtol=1e-14)
        c_loc, c_k = _coef(jnp.asarray(z), loc, kap)
        np.testing.assert_allclose(c_loc, 1.0, rtol=1e-11)
        np.testing.assert_allclose(c_k, dk, rtol=1e-10, atol=1e-14)


TAIL_KAPPAS = np.array([0.3, 5.0, 19.0, 25.0, 200.0, KAPPA_SWITCH * (1 - 1e-12), KAPPA_SWITCH])
TAIL_X = np.array([-6, -3.5, -1, -0.05, 0.02, 0.7, 2.5, 5, 6])[:, None] * np.minimum(1 / np.sqrt(TAIL_KAPPAS), 0.5)


def test_dz_dkappa_tails_and_continuity_at_switch():
    """Deterministic points from the mode out to 6 standard deviations (tail probability ~1e-9): relative error
    <= 1e-7; the CDF and dz/dkappa are continuous across the series switch at kappa = 20."""
    with jax.enable_x64(True):
        _, c_k = _coef(jnp.asarray(TAIL_X), jnp.zeros(7), jnp.asarray(TAIL_KAPPAS))
        f = jax.jit(von_mises_cdf)(jnp.asarray(TAIL_X), 0.0, jnp.asarray(TAIL_KAPPAS))
    c_k, f = np.asarray(c_k), np.asarray(f)
    ref = np.array([[ref_dz_dkappa(float(TAIL_X[i, j]), float(TAIL_KAPPAS[j])) for j in range(5)] for i in range(9)])
    np.testing.assert_allclose(c_k[:, :5], ref, rtol=1e-7)
    np.testing.assert_allclose(f[:, 5], f[:, 6], rtol=0, atol=3e-13)
    # dz/dkappa = -(dF/dkappa) / p(z).  Either branch gets dF/dkappa to ~1e-12 relative (the erfc expansion's
    # accuracy, module docstring) plus a few ulp of F absolute (the Fourier branch sums F ~ 1 itself), so a jump
    # across the switch is bounded by 1e-11 |dz/dkappa| + 1e-15 / p(z): in the far tail (6 standard deviations,
    # p ~ 3e-7) the absolute part dominates and a *relative* 1e-9 bound asks for more than float64 can give there.
    # (Measured: the dF/dkappa jump is <= 1e-14 everywhere, 2.4e-17 at 6 sd.)
    pdf_at_switch = np.array([_pdf(float(x), float(KAPPA_SWITCH)) for x in TAIL_X[:, 6]])
    bound = 1e-11 * np.abs(c_k[:, 6]) + 1e-15 / pdf_at_switch
    assert np.all(np.abs(c_k[:, 5] - c_k[:, 6]) <= bound), (np.abs(c_k[:, 5] - c_k[:, 6]) / bound).max()


def test_cdf_values_against_quadrature():
    ks = np.array([0.01, 1.0, 10.0, 19.99, 20.0, 60.0, 1000.0])
    xs = np.linspace(-3.1, 3.1, 9)[:, None] * np.minimum(1.0, 3.0 / np.sqrt(ks))  # (9, 7), shapes as above
    with jax.enable_x64(True):
        f = np.asarray(jax.jit(von_mises_cdf)(xs, 0.0, ks))
    ref = np.array([[0.5 + math.copysign(_quad(lambda t: _pdf(t, k), 0.0, abs(x)), x) for x, k in zip(row, ks)]
                    for row in xs])
    np.testing.assert_allclose(f, ref, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------------------------------
# statistics (seeded; tolerance 4 Monte-Carlo standard errors)
# ----------------------------------------------------------------------------------------------------------------------
MC_KAPPAS = [0.05, 1.0, 8.0, 30.0, 300.0]


def test_mc_gradient_of_mean_cos():
    """d/dkappa E[cos z] = d/dkappa I1/I0 within 4 MC standard errors; E[cos z] = I1/I0 likewise."""
    n = 100_000
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(2024)
        kap = jnp.asarray(MC_KAPPAS)
        z, dz = jax.jit(lambda k: jax.jvp(lambda kk: rsample_von_mises(key, 0.0, kk, (n,)), (k,),
                                          (jnp.ones_like(k),)))(kap)
    z, dz = np.asarray(z), np.asarray(dz)
    g = -np.sin(z) * dz
    for j, k in enumerate(MC_KAPPAS):
        est, se = g[:, j].mean(), g[:, j].std(ddof=1) / math.sqrt(n)
        assert abs(est - dmean_cos(k)) <= 4 * se, (k, est, dmean_cos(k), se)
        c = np.cos(z[:, j])
        assert abs(c.mean() - mean_cos(k)) <= 4 * c.std(ddof=1) / math.sqrt(n), k


def test_sampler_probability_integral_transform():
    """F(z) ~ U(0,1) (F on the representative interval): Kolmogorov-Smirnov with a fixed seed, p > 1e-3."""
    ks = np.array([0.0, 0.5, 4.0, 19.5, 20.5, 150.0])
    with jax.enable_x64(True):
        z = sample_von_mises(jax.random.PRNGKey(7), 0.3, ks, (20_000, 6))
        u = np.mod(np.asarray(jax.jit(von_mises_cdf)(z, 0.3, ks)), 1.0)
    for j in range(len(ks)):
        assert st.kstest(u[:, j], "uniform").pvalue > 1e-3, ks[j]


# ----------------------------------------------------------------------------------------------------------------------
# batching, jit, float32
# ----------------------------------------------------------------------------------------------------------------------
def test_batching_jit_and_distribution_object():
    with jax.enable_x64(True):
        loc = jnp.array([[0.0], [1.0], [-2.0]])
        kap = jnp.array([0.1, 3.0, 40.0, 900.0])
        d = VonMises(loc, kap)
        assert d.batch_shape == (3, 4) and d.event_shape == ()
        key = jax.random.PRNGKey(11)
        w = jnp.arange(4.0)

        def loss(dist):
            return jnp.sum(jnp.cos(dist.rsample(key, (5,))) * w)

        @jax.jit
        def everything(dist):
            z = dist.rsample(key, (5,))
            dz = jax.jacfwd(lambda kk: VonMises(dist.loc, kk).rsample(key, (5,)))(dist.concentration)
            return z, dist.log_prob(z), jax.grad(loss)(dist), dz

        z, lp, g, dz = everything(d)
        assert z.shape == (5, 3, 4) and lp.shape == (5, 3, 4)
        assert bool(jnp.all((z >= -np.pi) & (z < np.pi)))
        assert g.loc.shape == loc.shape and g.concentration.shape == kap.shape
        np.testing.assert_allclose(g.loc[:, 0], jnp.sum(-jnp.sin(z) * w, (0, 2)), rtol=1e-12)
        expected = jnp.einsum("sbkj,sbk->j", dz, -jnp.sin(z) * w)   # reverse = forward contracted
        np.testing.assert_allclose(g.concentration, expected, rtol=1e-10)
        keys = jax.random.split(key, 3)                              # vmap over keys = loop
        one = jax.jit(lambda kk: VonMises(0.0, 5.0).rsample(kk, (4,)))
        zv = jax.jit(jax.vmap(one))(keys)
        for i in range(3):
            np.testing.assert_allclose(zv[i], one(keys[i]), rtol=1e-13)


def test_float32_default_dtype():
    """Without x64: float32 samples in the support, finite gradients, CDF in [0, 1], and the float32 implicit
    derivative agrees with float64 at the same points (rtol 1e-3, atol 1e-2 of the largest)."""
    kap = jnp.array([0.0, 1e-3, 0.5, 3.0, 19.0, 21.0, 1e4], dtype=jnp.float32)
    z, dz = jax.jit(lambda k: jax.jvp(lambda kk: rsample_von_mises(jax.random.PRNGKey(0), 0.0, kk, (9,)), (k,),
                                      (jnp.ones_like(k),)))(kap)
    assert z.dtype == jnp.float32 and bool(jnp.all((z >= -np.pi) & (z < np.pi)))
    assert bool(jnp.all(jnp.isfinite(dz)))
    u = von_mises_cdf(z, 0.0, kap)
    assert bool(jnp.all((u >= 0) & (u <= 1)))
    with jax.enable_x64(True):
        _, c64 = _coef(jnp.asarray(z, jnp.float64), jnp.zeros(7), jnp.asarray(kap, jnp.float64))
    dz, c64 = np.asarray(dz, np.float64), np.asarray(c64)
    assert np.all(np.abs(dz - c64) <= 1e-3 * np.abs(c64) + 1e-2 * np.abs(c64).max(0))


# ----------------------------------------------------------------------------------------------------------------------
# properties (hypothesis) and bad input
# ----------------------------------------------------------------------------------------------------------------------
_cdf64 = jax.jit(lambda x, k: von_mises_cdf(x, 0.0, k))
_rs64 = jax.jit(lambda key, loc, k: rsample_von_mises(key, loc, k, (32,)))


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
        z = np.asarray(_rs64(jax.random.PRNGKey(seed), loc, k))
    assert np.all((z >= -np.pi) & (z < np.pi))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_concentration_raises(bad):
    with pytest.raises(ValueError, match="concentration"):
        VonMises(0.0, bad)
    with pytest.raises(ValueError, match="concentration"):
        sample_von_mises(jax.random.PRNGKey(0), 0.0, jnp.array([1.0, bad]))
    with pytest.raises(ValueError, match="concentration"):
        rsample_von_mises(jax.random.PRNGKey(0), 0.0, bad)


def test_bad_concentration_under_jit_gives_nan_and_terminates():
    with jax.enable_x64(True):
        z = _rs64(jax.random.PRNGKey(0), 0.0, -1.0)
        assert bool(jnp.all(jnp.isnan(z)))
        assert bool(jnp.isnan(_cdf64(jnp.zeros(16), -2.0)[0]))


# ----------------------------------------------------------------------------------------------------------------------
# large concentrations in float32 and float64 (issue 9, bug 1)
# ----------------------------------------------------------------------------------------------------------------------
WIDE_KAPPAS = [1e-2, 1.0, 1e2, 1e4, 1e6]


def test_reference_cdf_at_large_kappa_against_quadrature():
    """The KS reference below (float64 ``von_mises_cdf``: erfc expansion for kappa >= 20) matches quadrature at
    kappa = 1e4, 1e6 from the mode to 4 standard deviations (absolute 1e-13)."""
    ks = np.array([1e4, 1e6])
    xs = np.array([-4.0, -1.5, -0.3, 0.01, 0.8, 2.5])[:, None] / np.sqrt(ks)
    with jax.enable_x64(True):
        f = np.asarray(jax.jit(von_mises_cdf)(xs, 0.0, ks))
    ref = np.array([[0.5 + math.copysign(_quad(lambda t: _pdf(t, k), 0.0, abs(x)), x) for x, k in zip(row, ks)]
                    for row in xs])
    np.testing.assert_allclose(f, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sampler_ks_wide_kappa(dtype):
    """100,000 draws per kappa in {1e-2, 1, 1e2, 1e4, 1e6}, drawn in ``dtype``: KS test of F(z) against U(0, 1)
    with the float64 CDF as reference (checked against quadrature above), fixed seed, p > 1e-3.  Before the
    cancellation-free angle the float32 sampler failed at kappa = 1e4 (p = 4e-10) and 1e6 (p = 0: 128 distinct
    |z| in 100,000 draws)."""
    n = 100_000
    with jax.enable_x64(True):
        kap = jnp.asarray(WIDE_KAPPAS, dtype)
        z = sample_von_mises(jax.random.PRNGKey(3), 0.0, kap, (n, len(WIDE_KAPPAS)), dtype=dtype)
        assert z.dtype == jnp.dtype(dtype)
        u = np.asarray(jax.jit(von_mises_cdf)(jnp.asarray(z, jnp.float64), 0.0, jnp.asarray(WIDE_KAPPAS)))
    for j, k in enumerate(WIDE_KAPPAS):
        assert st.kstest(u[:, j], "uniform").pvalue > 1e-3, (dtype, k)


@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-4), ("float64", 1e-9)])
def test_dz_dkappa_wide_kappa(dtype, rtol):
    """Implicit dz/dkappa of ``rsample`` in ``dtype`` at kappa in {1e-2, ..., 1e6} against the quadrature reference
    (relative 2e-4 in float32, 1e-9 in float64; measured 4e-5 and 6e-11), and at kappa >= 1e4 against the large-kappa
    limit dz/dkappa = -tan(z/2)/kappa (from F ~ Phi(2 sqrt(kappa) sin(z/2)); relative error ~2.5/kappa).  Before the
    normaliser's derivative was computed without cancellation, float32 was wrong by 4% at 1e4 and ~100% at 1e6."""
    with jax.enable_x64(dtype == "float64"):
        kap = jnp.asarray(WIDE_KAPPAS, dtype)
        z, dz = jax.jit(lambda k: jax.jvp(lambda kk: rsample_von_mises(jax.random.PRNGKey(5), 0.0, kk, (6,)), (k,),
                                          (jnp.ones_like(k),)))(kap)
        assert z.dtype == jnp.dtype(dtype) and dz.dtype == jnp.dtype(dtype)
    z, dz = np.asarray(z, np.float64), np.asarray(dz, np.float64)
    for j, k in enumerate(WIDE_KAPPAS):
        ref = np.array([ref_dz_dkappa(float(x), k) for x in z[:, j]])
        np.testing.assert_allclose(dz[:, j], ref, rtol=rtol, err_msg=f"kappa={k}")
        if k >= 1e4:
            np.testing.assert_allclose(dz[:, j], -np.tan(z[:, j] / 2) / k, rtol=max(rtol, 3.0 / k))
