"""By hand, not collected by pytest: the statistical checks of ``test_tempered_components.py`` FAIL when the science
of ``chmc-tempered`` is broken on purpose (by monkeypatching, in this process only).

    python tests/tempered_broken_science.py EXAMPLE BROKEN [N_SAMPLES [NOISE_SCALES]]

``EXAMPLE``: ``cubic-lines`` (component weights; the test's example), ``two-lines``, ``four-lines``, ``hyperbola``
(weights, :mod:`dgm.models.disconnected`) or ``curve`` (the within-component quadrature check on ``x = u1 + u2^3``).
``BROKEN``: ``none`` (the real method), ``jacobian`` (the jump's ``log|det DT|`` dropped from the acceptance ratio) or
``determinant`` (``|J J^T|^{-1/2}`` dropped at level 0: the level-0 target becomes ``rho dH``, consistently in the
constrained-HMC moves and in the jump). Prints each estimate, the exact value and the distance in MCSE (ArviZ).
Same settings as the tests (4 chains, 300 warm-up, seed 1 / 5, every chain started in one component);
``NOISE_SCALES`` (comma-separated) replaces the default ladder.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dgm  # noqa: E402
import dgm.kernels.tempered as tempered  # noqa: E402
from conftest import mcse  # noqa: E402
from dgm.geometry import lifted  # noqa: E402
from dgm.models import disconnected  # noqa: E402


def break_science(broken: str) -> None:
    if broken == "jacobian":
        tempered.log_abs_det_normal_map = lambda generator, u, eta, sigma: jnp.zeros((), u.dtype)
    elif broken == "determinant":
        def wrong_lifted_geometry(model, x_obs, sigma, **options):
            n = model.input_dim

            def half_log_det(u):
                jac = jax.jacfwd(model.generator)(u)
                return 0.5 * jnp.linalg.slogdet(jac @ jac.T)[1]

            base = lifted.lifted_log_density(model)
            density = lambda z: base(z) + jnp.where(sigma == 0, half_log_det(z[:n]), 0.0)  # cancels |JJ^T|^-1/2
            return lifted.DenseGeometry(lifted.lifted_generator(model, sigma), x_obs, density, **options)

        tempered.lifted_geometry = wrong_lifted_geometry
    elif broken != "none":
        raise SystemExit(f"BROKEN must be none, jacobian or determinant, got {broken!r}")


def main(name: str, broken: str, n_samples: int, options: dict) -> None:
    break_science(broken)
    if name == "curve":
        from test_chmc_exact import X_CURVE, curve_model, curve_moment

        result = dgm.sample(curve_model(), np.array([X_CURVE]), method="chmc-tempered", n_chains=4, n_warmup=300,
                            n_samples=n_samples, seed=5, progress=False, **options)
        t = result.inputs[..., 1]
        checks = [("E[u2]", t, curve_moment(lambda s: s)), ("E[u2^2]", t**2, curve_moment(lambda s: s**2)),
                  ("P(u2<=0)", (t <= 0).astype(float), curve_moment(lambda s: 1.0, -6.0, 0.0))]
    else:
        from test_tempered_components import cubic_lines

        example = cubic_lines() if name == "cubic-lines" else disconnected.EXAMPLES[name]()
        label = {"cubic-lines": 2, "four-lines": 0}.get(name, 1)  # as in the tests
        result = dgm.sample(example.model, example.x_obs, method="chmc-tempered", n_chains=4, n_warmup=300,
                            n_samples=n_samples, initial_positions=example.start(label, 4, 0), seed=1, progress=False,
                            **options)
        labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
        checks = [(f"P(component {k})", (labels == k).astype(float), w) for k, w in enumerate(example.weights)]
    for label, draws, exact in checks:
        print(f"{name} [{broken}] {label}: estimate {draws.mean():.4f}, exact {exact:.4f}, "
              f"{(draws.mean() - exact) / mcse(draws):+.2f} MCSE")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    default = 1500 if sys.argv[1] == "curve" else 1000
    ladder = {"noise_scales": tuple(float(s) for s in sys.argv[4].split(","))} if len(sys.argv) > 4 else {}
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else default, ladder)
