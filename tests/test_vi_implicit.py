"""Generic implicit reparameterisation (dgm.vi.implicit) and the Gamma / Beta / Dirichlet distributions.

Exact answers where they exist (distributions with a closed-form inverse CDF, Gaussian standardisation), an
independent float64 reference elsewhere (5-point central differences, h = 1e-3 alpha, of scipy.special.gammainc /
gammaincc, whichever is below 1/2 so that no cancellation occurs), and seeded Monte-Carlo checks with a tolerance of
4 standard errors.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as ss
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hst
from jax.scipy.special import gammainc, ndtr

from dgm.vi.distributions import Beta, Dirichlet, Gamma, gamma_rsample
from dgm.vi.implicit import (
    implicit_attach,
    implicit_derivatives,
    implicit_reparam,
    implicit_reparam_multivariate,
    standardised_attach,
)
from dgm.vi.von_mises import VonMises


# ----------------------------------------------------------------------------------------------------------------------
# reference: implicit derivative of the unit-rate Gamma from scipy
# ----------------------------------------------------------------------------------------------------------------------
def ref_gamma_dz_da(z: float, a: float) -> float:
    return z * ref_gamma_dlogz_da(math.log(z), a)  # dz/da = z d(log z)/da


def ref_gamma_dlogz_da(log_z: float, a: float) -> float:
    """d log z / da, from the log-space sample (z itself may underflow for tiny a)."""
    z = math.exp(log_z)
    h = 1e-3 * a
    if ss.gammainc(a, z) < 0.5:
        f = lambda aa: ss.gammainc(aa, z)
    else:
        f = lambda aa: -ss.gammaincc(aa, z)
    d = (f(a - 2 * h) - 8 * f(a - h) + 8 * f(a + h) - f(a + 2 * h)) / (12 * h)
    return -d / math.exp(a * log_z - z - ss.gammaln(a))  # q(z) z = z^a e^-z / Gamma(a)


ALPHAS = np.geomspace(1e-2, 1e2, 9)


# ----------------------------------------------------------------------------------------------------------------------
# generic univariate rule: exact answers
# ----------------------------------------------------------------------------------------------------------------------
def _normal_sampler(key, p, shape):
    mu, sigma = p
    return mu + sigma * jax.random.normal(key, shape + jnp.shape(mu))


_normal_cdf = lambda z, p: ndtr((z - p[0]) / p[1])
_normal_rs = implicit_reparam(_normal_sampler, _normal_cdf)  # density by autodiff of the CDF


def test_normal_matches_explicit_reparameterisation():
    """N(mu, sigma): implicit dz/dmu = 1, dz/dsigma = (z - mu)/sigma = eps (exact), forward and reverse mode."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(0)
        mu, sigma = jnp.array([0.5, -1.0, 3.0]), jnp.array([1.0, 0.1, 2.5])
        f = jax.jit(lambda p: _normal_rs(key, p, (7,)))
        z = f((mu, sigma))
        eps = (z - mu) / sigma
        dmu, dsig = jax.jit(jax.jacfwd(f))((mu, sigma))
        np.testing.assert_allclose(jnp.einsum("sbb->sb", dmu), 1.0, rtol=1e-12)
        np.testing.assert_allclose(jnp.einsum("sbb->sb", dsig), eps, rtol=1e-10, atol=1e-12)
        gm, gs = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(f(p)))))((mu, sigma))
        np.testing.assert_allclose(gm, jnp.sum(jnp.cos(z), 0), rtol=1e-10)
        np.testing.assert_allclose(gs, jnp.sum(jnp.cos(z) * eps, 0), rtol=1e-10)


def _kuma_cdf(z, p):
    a, b = p
    return -jnp.expm1(b * jnp.log1p(-(z ** a)))


def _kuma_icdf(u, p):
    a, b = p
    return (-jnp.expm1(jnp.log1p(-u) / b)) ** (1.0 / a)


def _kuma_logpdf(z, p):
    a, b = p
    return jnp.log(a) + jnp.log(b) + (a - 1) * jnp.log(z) + (b - 1) * jnp.log1p(-(z ** a))


def test_kumaraswamy_matches_inverse_cdf_reparameterisation():
    """Kumaraswamy(a, b) has an inverse CDF: the implicit gradient must equal d/dphi F^{-1}(u | phi) exactly."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(1)
        p = (jnp.array([0.3, 1.0, 5.0]), jnp.array([2.0, 0.5, 7.0]))
        sampler = lambda k, pp, shape: _kuma_icdf(jax.random.uniform(k, shape + (3,)), pp)
        rs = implicit_reparam(sampler, _kuma_cdf, _kuma_logpdf)
        explicit = lambda pp: sampler(key, pp, (16,))
        ji = jax.jit(jax.jacfwd(lambda pp: rs(key, pp, (16,))))(p)
        je = jax.jit(jax.jacfwd(explicit))(p)
        for a, b in zip(ji, je):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)


def test_attach_and_derivatives_api():
    """implicit_attach returns z unchanged; implicit_derivatives gives the per-sample coefficients; non-float
    parameter leaves are ignored."""
    with jax.enable_x64(True):
        z = jnp.array([0.1, 0.5, 0.9])
        p = (jnp.array(2.0), jnp.array(3.0))
        attach = implicit_attach(_kuma_cdf, _kuma_logpdf)
        np.testing.assert_array_equal(attach(z, p), z)
        coef = implicit_derivatives(_kuma_cdf, z, p, _kuma_logpdf)
        u = _kuma_cdf(z, p)
        exact = jax.jacfwd(lambda pp: _kuma_icdf(u, pp))(p)
        np.testing.assert_allclose(coef[0], exact[0], rtol=1e-10)
        np.testing.assert_allclose(coef[1], exact[1], rtol=1e-10)
        c2 = implicit_derivatives(lambda zz, q: _kuma_cdf(zz, q[0]), z, (p, jnp.array(3)))
        assert c2[1] is None
        np.testing.assert_allclose(c2[0][0], coef[0], rtol=1e-8)  # density by autodiff instead of log_prob


# ----------------------------------------------------------------------------------------------------------------------
# Gamma
# ----------------------------------------------------------------------------------------------------------------------
@jax.jit
def _gamma_z_dz(key, a, rate):
    f = lambda aa, rr: Gamma(aa, rr).rsample(key, (16,))
    z, da = jax.jvp(lambda aa: f(aa, rate), (a,), (jnp.ones_like(a),))
    _, dr = jax.jvp(lambda rr: f(a, rr), (rate,), (jnp.ones_like(rate),))
    generic = implicit_reparam(lambda k, p, s: jax.random.gamma(k, p, s + jnp.shape(p)),
                               lambda zz, p: gammainc(p, zz),
                               lambda zz, p: (p - 1) * jnp.log(zz) - zz - jax.scipy.special.gammaln(p))
    _, dg = jax.jvp(lambda aa: generic(key, aa, (16,)), (a,), (jnp.ones_like(a),))
    return z, da, dr, dg


def test_gamma_gradient_accuracy_float64():
    """dz/dalpha of Gamma(alpha, 1) (jax.random.gamma's implicit gradient) against the scipy reference: max relative
    error <= 1e-6 over alpha in [1e-2, 1e2]; the generic transform with gammainc reproduces it; dz/drate = -z/rate."""
    with jax.enable_x64(True):
        a = jnp.asarray(ALPHAS)
        z, da, dr, dg = (np.asarray(v) for v in _gamma_z_dz(jax.random.PRNGKey(5), a, jnp.ones_like(a)))
    worst = 0.0
    for j, alpha in enumerate(ALPHAS):
        ok = z[:, j] > 0  # float64 underflow to exactly 0 is possible for alpha ~ 1e-2 (module docstring)
        assert ok.sum() >= 12
        ref = np.array([ref_gamma_dz_da(float(x), float(alpha)) for x in z[ok, j]])
        rel = np.abs(da[ok, j] - ref) / np.abs(ref)
        worst = max(worst, rel.max())
        assert rel.max() <= 1e-6, (alpha, rel.max())
        np.testing.assert_allclose(dg[ok, j], da[ok, j], rtol=1e-7)
    np.testing.assert_allclose(dr, -z, rtol=1e-14)
    print(f"Gamma: max relative error of dz/dalpha over {len(ALPHAS)} alphas: {worst:.2e}")


def test_gamma_log_prob_cdf_mean():
    with jax.enable_x64(True):
        d = Gamma(jnp.array([0.3, 2.0, 50.0]), jnp.array([2.0, 1.0, 0.5]))
        x = jnp.array([[0.05], [1.3], [80.0]])
        np.testing.assert_allclose(d.log_prob(x), st.gamma.logpdf(x, [0.3, 2.0, 50.0], scale=[0.5, 1.0, 2.0]),
                                   rtol=1e-12)
        np.testing.assert_allclose(d.cdf(x), st.gamma.cdf(x, [0.3, 2.0, 50.0], scale=[0.5, 1.0, 2.0]), rtol=1e-12)
        np.testing.assert_allclose(d.mean(), [0.15, 2.0, 100.0], rtol=1e-15)
        assert d.log_prob(-1.0)[0] == -np.inf


# ----------------------------------------------------------------------------------------------------------------------
# Beta (Gamma ratio) and Dirichlet (softmax of log-Gammas)
# ----------------------------------------------------------------------------------------------------------------------
def test_beta_gradient_pointwise_via_gamma_reference():
    """z = G_a/(G_a+G_b) is jax.random.beta's draw; dz/da, dz/db equal the chain rule with the scipy reference for
    d log G/da: dz/da = z(1-z) dlogG_a/da, dz/db = -z(1-z) dlogG_b/db (relative error <= 1e-6, also where z rounds
    to 1)."""
    aa = np.array([0.01, 0.1, 1.0, 10.0, 100.0])
    bb = np.array([2.0, 0.05, 30.0, 1.0, 100.0])
    key = jax.random.PRNGKey(9)
    with jax.enable_x64(True):

        @jax.jit
        def run(a, b):
            f = lambda x, y: Beta(x, y).rsample(key, (8,))
            z, da = jax.jvp(lambda x: f(x, b), (a,), (jnp.ones_like(a),))
            _, db = jax.jvp(lambda y: f(a, y), (b,), (jnp.ones_like(b),))
            ka, kb = jax.random.split(key)
            shape = (8, 5)
            lga = jax.random.loggamma(ka, jnp.broadcast_to(a, shape), shape)
            lgb = jax.random.loggamma(kb, jnp.broadcast_to(b, shape), shape)
            return z, da, db, lga, lgb, jax.random.beta(key, a, b, shape)

        z, da, db, lga, lgb, zref = (np.asarray(v) for v in run(jnp.asarray(aa), jnp.asarray(bb)))
    np.testing.assert_allclose(z, zref, rtol=1e-14)
    np.testing.assert_allclose(z, 1.0 / (1.0 + np.exp(lgb - lga)), rtol=1e-13)
    w = np.exp(lga + lgb - 2 * np.logaddexp(lga, lgb))  # z (1 - z) without cancellation when z ~ 1
    for j in range(5):
        for i in range(8):
            if not (np.exp(lga[i, j]) > 0 and np.exp(lgb[i, j]) > 0 and w[i, j] > 0):
                continue  # Gamma variate underflowed in float64 (possible for a ~ 0.01)
            ea = w[i, j] * ref_gamma_dlogz_da(float(lga[i, j]), float(aa[j]))
            eb = -w[i, j] * ref_gamma_dlogz_da(float(lgb[i, j]), float(bb[j]))
            assert abs(da[i, j] - ea) <= 1e-6 * abs(ea), (aa[j], bb[j], da[i, j], ea)
            assert abs(db[i, j] - eb) <= 1e-6 * abs(eb), (aa[j], bb[j], db[i, j], eb)


@pytest.mark.slow
def test_beta_dirichlet_mc_gradients():
    """Seeded MC, 4 standard errors: d/da E[z] = b/(a+b)^2 and d/da E[log z] = psi'(a) - psi'(a+b) for Beta;
    d/dalpha_0 E[log z_k] = delta_{0k} psi'(alpha_0) - psi'(sum alpha) for Dirichlet."""
    n = 40_000
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(77)
        a, b = 0.7, 2.5

        @jax.jit
        def run(a_):
            z, dz = jax.jvp(lambda x: Beta(x, b).rsample(key, (n,)), (a_,), (jnp.ones_like(a_),))
            alpha = jnp.array([0.5, 1.5, 3.0])
            e0 = jnp.array([1.0, 0.0, 0.0])
            y, dy = jax.jvp(lambda al: Dirichlet(al).rsample(key, (n,)), (alpha,), (e0,))
            return z, dz, y, dy

        z, dz, y, dy = (np.asarray(v) for v in run(jnp.asarray(a)))

    def check(samples, exact, label):
        est, se = samples.mean(), samples.std(ddof=1) / math.sqrt(len(samples))
        assert abs(est - exact) <= 4 * se, (label, est, exact, se)

    check(dz, b / (a + b) ** 2, "Beta E[z]")
    check(dz / z, ss.polygamma(1, a) - ss.polygamma(1, a + b), "Beta E[log z]")
    alpha = np.array([0.5, 1.5, 3.0])
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
    for k in range(3):
        exact = (ss.polygamma(1, alpha[0]) if k == 0 else 0.0) - ss.polygamma(1, alpha.sum())
        check(dy[:, k] / y[:, k], exact, f"Dirichlet E[log z_{k}]")


def test_beta_dirichlet_log_prob_and_reuse_of_jax_random():
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(4)
        d = Beta(jnp.array([0.5, 2.0]), jnp.array([3.0, 2.0]))
        x = jnp.array([[0.1], [0.75]])
        np.testing.assert_allclose(d.log_prob(x), st.beta.logpdf(x, [0.5, 2.0], [3.0, 2.0]), rtol=1e-12)
        np.testing.assert_allclose(d.cdf(x), st.beta.cdf(x, [0.5, 2.0], [3.0, 2.0]), rtol=1e-10)
        alpha = jnp.array([[0.5, 1.0, 4.0], [2.0, 2.0, 2.0]])
        dd = Dirichlet(alpha)
        assert dd.batch_shape == (2,) and dd.event_shape == (3,)
        y, yref, lp = jax.jit(lambda: (dd.rsample(key, (4,)), jax.random.dirichlet(key, alpha, (4, 2)),
                                       dd.log_prob(dd.rsample(key, (4,)))))()
        np.testing.assert_array_equal(y, yref)
        ref = np.array([[st.dirichlet.logpdf(np.asarray(y[i, j]), np.asarray(alpha[j])) for j in range(2)]
                        for i in range(4)])
        np.testing.assert_allclose(lp, ref, rtol=1e-10)
        np.testing.assert_allclose(dd.mean().sum(-1), 1.0)


@pytest.mark.slow
def test_values_and_gradients_equal_jax_random():
    """Same draws as jax.random.gamma / beta / dirichlet and the same (implicit) gradients, which we evaluate with one
    vectorised lax.random_gamma_grad call instead of jax.random's per-entry lax.map on CPU."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(21)
        a = jnp.array([0.02, 0.5, 3.0, 40.0])
        b = jnp.array([1.0, 0.1, 7.0, 2.0])
        al = jnp.array([[0.3, 1.0, 5.0], [2.0, 0.05, 1.0]])

        @jax.jit
        def run(a, b, al):
            ours = lambda x, y, z: (Gamma(x).rsample(key, (6,)), Beta(x, y).rsample(key, (6,)),
                                    Dirichlet(z).rsample(key, (6,)))
            theirs = lambda x, y, z: (jax.random.gamma(key, x, (6, 4)), jax.random.beta(key, x, y, (6, 4)),
                                      jax.random.dirichlet(key, z, (6, 2)))
            t = (jnp.ones_like(a), jnp.ones_like(b), jnp.ones_like(al))
            return jax.jvp(ours, (a, b, al), t), jax.jvp(theirs, (a, b, al), t)

        (zo, do), (zt, dt) = run(a, b, al)
        for x, y in zip(zo, zt):
            np.testing.assert_allclose(x, y, rtol=1e-14)
        for x, y in zip(do, dt):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-300)  # rounding order differs


# ----------------------------------------------------------------------------------------------------------------------
# multivariate standardisation (paper, eq. 5)
# ----------------------------------------------------------------------------------------------------------------------
def test_multivariate_gaussian_standardisation_matches_explicit():
    """S(z) = L^{-1}(z - mu): implicit eq. 5 gives the explicit reparameterisation's dz/dmu and dz/dL."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(2)
        d = 3
        mu = jnp.array([0.3, -1.0, 2.0])
        L = jnp.array([[1.0, 0.0, 0.0], [0.4, 0.7, 0.0], [-0.2, 0.3, 1.5]])
        eps_of = lambda k, shape: jax.random.normal(k, shape + (d,))
        sampler = lambda k, p, shape: p[0] + eps_of(k, shape) @ jnp.tril(p[1]).T
        standardise = lambda z, p: jax.scipy.linalg.solve_triangular(p[1], (z - p[0])[..., None], lower=True)[..., 0]
        rs = implicit_reparam_multivariate(sampler, standardise)
        ji = jax.jit(jax.jacfwd(lambda p: rs(key, p, (5,))))((mu, L))
        je = jax.jit(jax.jacfwd(lambda p: sampler(key, p, (5,))))((mu, L))
        np.testing.assert_allclose(ji[0], je[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ji[1], je[1], rtol=1e-10, atol=1e-12)
        gi = jax.grad(lambda p: jnp.sum(jnp.sin(rs(key, p, (5,)))))((mu, L))
        ge = jax.grad(lambda p: jnp.sum(jnp.sin(sampler(key, p, (5,)))))((mu, L))
        np.testing.assert_allclose(gi[1], ge[1], rtol=1e-10, atol=1e-12)


def test_multivariate_chained_gamma_distributional_transform():
    """z1 ~ Gamma(a), z2 | z1 ~ Gamma(a z1); S = (P(a, z1), P(a z1, z2)) (successive conditional CDFs).  Eq. 5 must
    equal differentiating the sequential sampler through jax.random.gamma's implicit gradients."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(12)
        k1, k2 = jax.random.split(key)

        def sequential(a, shape):  # jax.random.gamma's draws and implicit gradients (vectorised attachment)
            z1 = gamma_rsample(k1, a, shape, jnp.float64)
            z2 = gamma_rsample(k2, a * z1, shape, jnp.float64)
            return jnp.stack([z1, z2], -1)

        standardise = lambda z, a: jnp.stack([gammainc(a, z[..., 0]), gammainc(a * z[..., 0], z[..., 1])], -1)
        attach = standardised_attach(standardise)
        a = jnp.asarray(1.7)
        zi, dzi = jax.jit(lambda a_: jax.jvp(lambda aa: attach(jax.lax.stop_gradient(sequential(aa, (6,))), aa),
                                             (a_,), (jnp.ones_like(a_),)))(a)
        ze, dze = jax.jit(lambda a_: jax.jvp(lambda aa: sequential(aa, (6,)), (a_,), (jnp.ones_like(a_),)))(a)
        np.testing.assert_allclose(zi, ze)
        np.testing.assert_allclose(dzi, dze, rtol=1e-7)


# ----------------------------------------------------------------------------------------------------------------------
# one interface for all latent families; properties; bad input
# ----------------------------------------------------------------------------------------------------------------------
FAMILIES = [
    lambda: Gamma(jnp.array([0.5, 2.0]), jnp.array([1.0, 3.0])),
    lambda: Beta(jnp.array([0.5, 2.0]), jnp.array([1.5, 1.0])),
    lambda: Dirichlet(jnp.array([[0.5, 1.0, 2.0], [3.0, 1.0, 1.0]])),
    lambda: VonMises(jnp.array([0.0, 1.0]), jnp.array([0.5, 30.0])),
]


@pytest.mark.parametrize("make", FAMILIES, ids=["gamma", "beta", "dirichlet", "von_mises"])
def test_common_interface_and_elbo_gradient(make):
    """Same interface for every latent family; the gradient of a Monte-Carlo entropy estimate -E[log q(z)] is
    finite for every parameter (one jitted function per family)."""
    key = jax.random.PRNGKey(0)

    @jax.jit
    def run(dist):
        z = dist.rsample(key, (64,))
        g = jax.grad(lambda dd: -jnp.mean(dd.log_prob(dd.rsample(key, (64,)))))(dist)
        return z, dist.sample(key, (64,)), dist.log_prob(z), g

    d = make()
    z, zs, lp, g = run(d)
    assert z.shape == (64,) + d.batch_shape + d.event_shape
    assert lp.shape == (64,) + d.batch_shape
    np.testing.assert_array_equal(zs, z)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(g))


_gbd = jax.jit(lambda key, a, b: (Gamma(a).rsample(key, (8,)), Beta(a, b).rsample(key, (8,)),
                                  Dirichlet(jnp.stack([a, b])).rsample(key, (8,))))


@settings(max_examples=30, deadline=None)
@given(a=hst.floats(0.05, 100.0), b=hst.floats(0.05, 100.0), seed=hst.integers(0, 2**31 - 1))
def test_samples_in_support(a, b, seed):
    g, x, y = _gbd(jax.random.PRNGKey(seed), jnp.float32(a), jnp.float32(b))
    assert bool(jnp.all(g >= 0)) and bool(jnp.all((x >= 0) & (x <= 1)))
    assert bool(jnp.all(y >= 0)) and np.allclose(np.asarray(y).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: Gamma(-1.0), lambda: Gamma(1.0, 0.0), lambda: Gamma(float("nan")),
                                  lambda: Beta(1.0, -2.0), lambda: Beta(0.0, 1.0),
                                  lambda: Dirichlet(jnp.array([1.0, -2.0])), lambda: Dirichlet(1.0)])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_bad_parameters_under_jit_give_nan_log_prob():
    lp = jax.jit(lambda a: Gamma(a).log_prob(1.0))(-1.0)
    assert bool(jnp.isnan(lp))
