"""Compile once: cached programs across dgm.sample calls (new observations included), the persistent cache across
processes, and set-up time accounted for."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np

import dgm

A = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 1.0]])


def curved():
    return dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u + 0.1 * jnp.sin(u[:2]), 3)


def test_repeated_calls_reuse_the_compiled_program_and_condition_on_the_new_observation():
    model = curved()
    first = dgm.sample(model, np.array([1.0, 0.0]), n_warmup=30, n_samples=40, seed=0, progress=False,
                       compilation_cache=False)
    second = dgm.sample(model, np.array([-2.0, 0.5]), n_warmup=30, n_samples=40, seed=1, progress=False,
                        compilation_cache=False)
    assert first.compile_time > 0 and second.compile_time == 0.0
    assert first.setup_time > 0 and second.setup_time > 0
    # the cached program conditions on the observation it is given, not the one it was compiled with
    for result, x in ((first, [1.0, 0.0]), (second, [-2.0, 0.5])):
        residual = np.abs(np.einsum("ij,cdj->cdi", A, result.inputs) + 0.1 * np.sin(result.inputs[..., :2]) - x)
        allowed = 1e-8 * max(1.0, np.abs(x).max())  # the projection rule: tol * max(1, |x|_inf)
        assert residual.max() < allowed and result.max_residual < allowed
    # a different chunking, chain count or option is a different program
    third = dgm.sample(model, np.array([1.0, 0.0]), n_chains=2, n_warmup=30, n_samples=40, seed=0, progress=False,
                       compilation_cache=False)
    assert third.compile_time > 0


def test_chunking_does_not_change_the_draws():
    """Chunks are an implementation detail: keys depend on the chunk index, so compare statistics, and the exact
    draws for the same chunk size."""
    model = curved()
    runs = [dgm.sample(model, np.array([1.0, 0.0]), n_warmup=25, n_samples=37, seed=3, progress=False,
                       chunk_size=size, compilation_cache=False) for size in (10, 10, 64)]
    np.testing.assert_array_equal(runs[0].inputs, runs[1].inputs)
    for run in runs:  # phases that are not a multiple of the chunk run exactly the iterations asked for
        assert run.inputs.shape == (4, 37, 3) and run.warmup_stats["step_size"].shape == (4, 25)
        assert np.all(run.stats["n_steps"] >= 4)  # no padding iteration leaks into the draws


def test_persistent_cache_is_hit_by_a_second_process(tmp_path):
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, dgm
        hits = []
        jax.monitoring.register_event_listener(
            lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
        A = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 1.0]])
        model = dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u + 0.1 * jnp.sin(u[:2]), 3)
        result = dgm.sample(model, np.array([1.0, 0.0]), n_warmup=20, n_samples=20, progress=False)
        print("HITS", len(hits), jax.config.jax_compilation_cache_dir)
    """)
    env = dict(os.environ, DGM_CACHE_DIR=str(tmp_path), DGM_COMPILATION_CACHE="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (int(r.stdout.split("HITS")[1].split()[0]) for r in runs)
    assert str(tmp_path / "jax") in runs[0].stdout
    assert any((tmp_path / "jax").iterdir())  # programs were written ...
    assert first == 0 and second >= 2  # ... and read back by the new process (the init and chunk programs at least)
    env["DGM_COMPILATION_CACHE"] = "0"  # opting out: nothing is read
    off = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert off.returncode == 0 and "HITS 0 None" in off.stdout


def test_setup_and_unrecorded_failures_round_trip(tmp_path):
    result = dgm.sample(curved(), np.array([1.0, 0.0]), n_warmup=10, n_samples=10, thin=3, progress=False,
                        compilation_cache=False)
    result.save(tmp_path / "r.nc")
    loaded = dgm.load(tmp_path / "r.nc")
    assert loaded.setup_time == result.setup_time and loaded.unrecorded_failures == result.unrecorded_failures
    assert set(result.unrecorded_failures) == {"newton_not_converged", "not_reversible", "non_finite", "divergent"}
