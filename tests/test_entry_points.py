"""Every entry point runs the same engine: for each method, the same draws from ``dgm.sample``, ``dgm.sample_many``,
a checkpointed run and a sharded run (issue 21).

Observation ``i`` of ``sample_many(model, xs, seed=s)`` is documented to be ``dgm.sample(model, xs[i],
seed=fold_in(PRNGKey(s), i))``; with ``chain_method="sequential"`` both run the same per-chain program, so the
equality is bit for bit: draws, per-draw and warm-up statistics, adapted step sizes, ``settings`` (apart from the
batch's own entries) and the manifold components. The cases cover every method of :data:`dgm.methods.METHODS` (the
test fails when one is added without a case), with declared symmetries (checked at the starting points, applied by the
constrained HMC methods), ``metric="diagonal"`` (adapted in windows) and ``chmc-tempered``'s noisy levels, which
adapt during ``n_warmup``. Checked by hand that the test fails when a path diverges: dropping ``n_warmup`` from
``sample_many``'s method options (the old ``sample_many``) fails ``chmc-tempered``'s case (``level_step_size``
differs); building ``sample_many``'s settings from the first observation's method fails it too (``noise_scales``);
skipping the symmetry moves in one path fails ``chmc``.

A checkpointed run (draws streamed to disk) goes through the same compiled program: bit for bit. A sharded run here
uses a one-device mesh (the test process has one CPU device): the chains ``vmap``ped under ``shard_map`` against
``lax.map`` one chain after another, equal to rounding (1e-8 after the run; the adapted step sizes exactly, see
:mod:`dgm.runtime.engine`); several devices are compared in ``tests/test_sharding.py``.
"""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.methods import METHODS
from dgm.runtime.sharding import chain_mesh

XS = np.array([[0.7], [0.1]])
RUN = dict(n_chains=2, n_warmup=12, n_samples=6, chunk_size=8, progress=False, n_steps=2)
BATCH_ONLY = {"sample_many_seed", "observation_index", "n_observations", "batch_wall_time", "sharded"}


def generator(u):
    return jnp.array([u[0] + u[1] ** 2 + 0.5 * u[2]])


def flip(u):
    return u.at[1].multiply(-1.0)


SYMMETRIC = dgm.GenerativeModel(generator, 3, name="curved-symmetric", symmetries=[dgm.Symmetry(flip, name="flip")])
PLAIN = dgm.GenerativeModel(generator, 3, name="curved")

CASES = {
    "chmc": (SYMMETRIC, dict(metric="diagonal", detect_components=True)),  # path tests: components compared too
    "chmc-dynamic": (SYMMETRIC, dict(max_tree_depth=3)),
    "chmc-tempered": (PLAIN, dict()),
    "hmc": (SYMMETRIC, dict(noise_scale=0.2)),
    "nuts": (SYMMETRIC, dict(noise_scale=0.2, max_num_doublings=3)),
    "abc-mcmc": (SYMMETRIC, dict(epsilon=0.2)),
    "abc-slice": (SYMMETRIC, dict(epsilon=0.2)),
    "abc-slice-gaussian": (SYMMETRIC, dict(epsilon=0.2)),
    "abc-hmc": (SYMMETRIC, dict(epsilon=0.2)),
}


def _options(method):
    model, options = CASES[method]
    options = dict(RUN, **options)
    if method in ("abc-mcmc", "abc-slice", "abc-slice-gaussian", "chmc-dynamic"):
        options.pop("n_steps")  # no integrator, or a trajectory length of its own
    return model, options


def _single(method, **extra):
    model, options = _options(method)
    with dgm.float64():
        return dgm.sample(model, XS[1], method=method, seed=jax.random.fold_in(jax.random.PRNGKey(5), 1),
                          **{**options, "chain_method": "sequential", **extra})


def _assert_same(a, b, atol=0.0):
    def close(x, y, what):
        x, y = np.asarray(x), np.asarray(y)
        if atol and np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=what)
        else:
            np.testing.assert_array_equal(x, y, err_msg=what)

    close(a.inputs, b.inputs, "inputs")
    close(a.latents, b.latents, "latents")
    np.testing.assert_array_equal(a.step_size, b.step_size, err_msg="adapted step sizes")
    for group in ("stats", "warmup_stats"):
        assert sorted(getattr(a, group)) == sorted(getattr(b, group)), group
        for name in getattr(a, group):
            close(getattr(a, group)[name], getattr(b, group)[name], f"{group}[{name!r}]")
    assert a.method == b.method and a.kernel == b.kernel and a.epsilon == b.epsilon


def _assert_same_settings(a, b, ignore=()):
    ignore = BATCH_ONLY | set(ignore)

    def stored(settings):  # as a saved file holds them (JSON: tuples become lists)
        return json.loads(json.dumps({k: v for k, v in settings.items() if k not in ignore}, default=str))

    assert stored(a.settings) == stored(b.settings)
    components = [None if r.components is None else dict(r.components.to_dict(), seconds=None) for r in (a, b)]
    assert components[0] == components[1]  # all but the time the path tests took


def test_every_method_has_a_case():
    assert sorted(CASES) == sorted(METHODS)


@pytest.mark.parametrize("method", sorted(CASES))
def test_every_entry_point_gives_the_same_draws(method, tmp_path):
    model, options = _options(method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs of tiny models: failure-rate and mixing warnings alike everywhere
        single = _single(method)
        with dgm.float64():
            many = dgm.sample_many(model, XS, method=method, seed=5, chain_method="sequential", **options)
        stored = _single(method, checkpoint=tmp_path / "run", checkpoint_every=8)
        sharded = _single(method, chain_method="sharded", mesh=chain_mesh(jax.devices()[:1]))

    assert many[1].settings["seed"] == single.settings["seed"]  # the documented per-observation key
    _assert_same(many[1], single)
    _assert_same_settings(many[1], single)
    if model.symmetries:
        assert single.settings["symmetries"] == ["flip"]
    if options.get("detect_components") is True:
        assert single.components is not None  # path tests ran, and gave the same components on every path

    assert stored.store is not None  # draws on disk, read lazily
    _assert_same(stored, single)
    _assert_same_settings(stored, single)

    _assert_same(sharded, single, atol=1e-8)
    _assert_same_settings(sharded, single, ignore={"chain_method"})
    assert sharded.settings["chain_method"] == "sharded"
