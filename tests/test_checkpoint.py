"""Checkpoint and resume (dgm.runtime.checkpoint) and draws streamed to disk (dgm.runtime.draw_store).

The promise tested: a run killed with SIGKILL and resumed gives draws and statistics bit-identical to an uninterrupted
run with the same seed; a damaged newest checkpoint falls back to the previous one; anything else is a clear error.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import dgm
from dgm.runtime import checkpoint as checkpointing
from dgm.runtime.draw_store import LazyArray

# One model for every test (programs are cached per model object): a curved 2-D manifold in R^3. The SIGKILL test's
# subprocess executes the same source, so both processes build the same model.
MODEL_SOURCE = textwrap.dedent("""
    import jax.numpy as jnp, numpy as np, dgm
    A = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 1.0]])
    MODEL = dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u + 0.1 * jnp.sin(u[:2]), 3, name="curved")
    X = np.array([1.0, 0.0])
    SETTINGS = dict(n_warmup=30, n_samples=50, seed=3, chunk_size=10, thin=2, progress=False,
                    compilation_cache=False)
""")
namespace: dict = {}
exec(MODEL_SOURCE, namespace)
MODEL, X, SETTINGS = namespace["MODEL"], namespace["X"], namespace["SETTINGS"]


def assert_same_run(got, ref):
    """Every draw and statistic bit for bit (the streamed result's arrays are read from disk)."""
    np.testing.assert_array_equal(np.asarray(got.inputs), ref.inputs)
    np.testing.assert_array_equal(np.asarray(got.latents), ref.latents)
    for mine, theirs in ((got.stats, ref.stats), (got.warmup_stats, ref.warmup_stats)):
        assert set(mine) == set(theirs)
        for name in theirs:
            np.testing.assert_array_equal(np.asarray(mine[name]), theirs[name], err_msg=name)
    np.testing.assert_array_equal(got.step_size, ref.step_size)
    assert got.max_residual == ref.max_residual and got.unrecorded_failures == ref.unrecorded_failures


@pytest.fixture(scope="module")
def reference():
    return dgm.sample(MODEL, X, **SETTINGS)


class Interrupt(Exception):
    pass


def interrupted_run(directory, monkeypatch, after_chunks, **kwargs):
    """Start a checkpointed run and stop it (an exception, as a crash would) after ``after_chunks`` chunks."""
    original = checkpointing.Run.after_chunk
    calls = []

    def after_chunk(self, *args, **kw):
        original(self, *args, **kw)
        calls.append(1)
        if len(calls) == after_chunks:
            raise Interrupt

    monkeypatch.setattr(checkpointing.Run, "after_chunk", after_chunk)
    with pytest.raises(Interrupt):
        dgm.sample(MODEL, X, checkpoint=directory, **{**SETTINGS, **kwargs})
    monkeypatch.setattr(checkpointing.Run, "after_chunk", original)


def test_streamed_run_equals_the_in_memory_run_and_is_read_lazily(tmp_path, reference):
    got = dgm.sample(MODEL, X, checkpoint=tmp_path / "run", checkpoint_every=20, **SETTINGS)
    assert isinstance(got.inputs, LazyArray) and got.store == str(tmp_path / "run" / "draws.zarr")
    assert got.inputs.shape == (4, 50, 3) and got.n_draws == 50
    assert_same_run(got, reference)
    tree = got.to_arviz()  # ArviZ DataTree opened lazily from the Zarr store
    assert set(tree.children) >= {"posterior", "sample_stats", "warmup_sample_stats", "observed_data"}
    np.testing.assert_array_equal(tree["posterior"]["u"].values, reference.inputs)
    np.testing.assert_array_equal(dgm.load(tmp_path / "run").inputs, reference.inputs)  # a checkpoint dir loads
    got.save(tmp_path / "copy.nc")  # and saves like an in-memory result
    assert_same_run(dgm.load(tmp_path / "copy.nc"), reference)
    assert np.isfinite(got.summary()["ess_bulk"]).all()
    # resume= on a finished run returns its result and runs nothing
    states = sorted(p.name for p in (tmp_path / "run").glob("state-*.ckpt"))
    again = dgm.sample(MODEL, X, resume=tmp_path / "run", **SETTINGS)
    assert_same_run(again, reference)
    assert sorted(p.name for p in (tmp_path / "run").glob("state-*.ckpt")) == states


@pytest.mark.parametrize("after_chunks, flush", [(3, "each chunk"), (7, "each chunk"), (7, "buffered")])
def test_resume_after_a_crash_is_bit_identical(tmp_path, monkeypatch, reference, after_chunks, flush):
    """Checkpoints every 2 chunks (3 warm-up chunks, then 5 sampling chunks). Draws flushed to the store after every
    chunk: the crash after chunk 3 (the end of the warm-up) or 7 (sampling) leaves draws in the store that no
    checkpoint accounts for, which the resumed run writes again. Draws buffered (the default for small draws): the
    checkpoint carries them and the store holds none yet."""
    if flush == "each chunk":
        monkeypatch.setattr(checkpointing, "FLUSH_BYTES", 0)
    interrupted_run(tmp_path / "run", monkeypatch, after_chunks, checkpoint_every=20)
    import zarr

    store = zarr.open_group(str(tmp_path / "run" / "draws.zarr"), mode="r")
    written = [  # in the store: warm-up chunk 3 (its step sizes), sampling chunk 4 (its draws)
        "warmup_sample_stats" in store and bool(np.all(store["warmup_sample_stats"]["step_size"][:, 20:30] > 0)),
        "posterior" in store and bool(np.any(store["posterior"]["u"][:, 30:40] != 0))]
    assert written == {"each chunk": [True, after_chunks == 7], "buffered": [False, False]}[flush]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is corrupt: no warning
        got = dgm.sample(MODEL, X, resume=tmp_path / "run", **SETTINGS)
    assert_same_run(got, reference)


def test_resume_restores_metric_adaptation_and_the_heuristic_step_size(tmp_path, monkeypatch):
    """The Welford state of a diagonal metric (mid-window) and a find-reasonable-step-size start survive too."""
    for name, kwargs in (("metric", dict(metric="diagonal", geometry="dense", n_warmup=60)),
                         ("heuristic", dict(n_warmup=0))):
        settings = {**SETTINGS, **kwargs}
        reference = dgm.sample(MODEL, X, **settings)
        interrupted_run(tmp_path / name, monkeypatch, 3, checkpoint_every=10, **kwargs)
        assert_same_run(dgm.sample(MODEL, X, resume=tmp_path / name, **settings), reference)


KILLED_RUN = MODEL_SOURCE + textwrap.dedent("""
    import sys, time
    import dgm.driver
    advance = dgm.driver._Progress.advance
    def slow_advance(self, n):  # host side only: slows the run down so that it is killed mid-way
        time.sleep(0.4)
        advance(self, n)
    dgm.driver._Progress.advance = slow_advance
    dgm.sample(MODEL, X, checkpoint=sys.argv[1], checkpoint_every=10, **SETTINGS)
    print("FINISHED")
""")


def test_resume_after_sigkill_in_a_subprocess_is_bit_identical(tmp_path, reference):
    directory = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(directory)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (directory / "state-000002.ckpt").exists():  # the second checkpoint is on disk: kill it
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no second checkpoint within 300 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL and "FINISHED" not in out
    states = sorted(p.name for p in directory.glob("state-*.ckpt"))
    assert states and states[-1] < "state-000009.ckpt"  # killed mid-way (8 chunks, then the final state)
    got = dgm.sample(MODEL, X, resume=directory, **SETTINGS)
    assert_same_run(got, reference)


def corrupt(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the payload
        flipped = bytearray(data)
        for i in (len(data) - 100, len(data) - 7):
            flipped[i] ^= 0xFF
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, reference, how):
    interrupted_run(tmp_path / "run", monkeypatch, 5, checkpoint_every=10)
    latest, previous = sorted((tmp_path / "run").glob("state-*.ckpt"), reverse=True)
    corrupt(latest, how)
    with pytest.warns(RuntimeWarning, match=rf"{latest.name} is unusable .*using the previous one, {previous.name}"):
        got = dgm.sample(MODEL, X, resume=tmp_path / "run", **SETTINGS)
    assert_same_run(got, reference)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    interrupted_run(tmp_path / "run", monkeypatch, 3, checkpoint_every=10)
    for path in (tmp_path / "run").glob("state-*.ckpt"):
        corrupt(path, "flip")
    with pytest.warns(RuntimeWarning), pytest.raises(checkpointing.CheckpointError, match="no usable checkpoint"):
        dgm.sample(MODEL, X, resume=tmp_path / "run", **SETTINGS)


@pytest.mark.parametrize("change, expected", [
    (dict(n_chains=2), "n_chains: 2 here, 4 in the checkpoint"),
    (dict(seed=4), "seed: 4 here, 3 in the checkpoint"),
    (dict(x_obs=np.array([1.0, 0.5])), "observation: (differs)"),
    (dict(method="chmc-dynamic"), "method: 'chmc-dynamic' here, 'chmc' in the checkpoint"),
    (dict(model="other"), "model_functions: (differs)"),
    (dict(model="wider"), "input_dim: 4 here, 3 in the checkpoint"),
    (dict(n_steps=(2, 3)), "option n_steps: [2, 3] here, [4, 8] in the checkpoint"),
])
def test_settings_that_differ_from_the_checkpoint_are_named(tmp_path, change, expected):
    directory = tmp_path / "run"
    directory.mkdir()
    with dgm.float64():  # as dgm.sample computes it
        stored = checkpointing.fingerprint(
            MODEL, X, method="chmc", common=dict(step_size=None, n_steps=(4, 8), n_inner=1, tol=1e-8, max_newton=50),
            options={}, n_chains=4, n_warmup=30, n_samples=50, thin=2, seed=3, chunk_size=10,
            chain_method="sequential", step_size_adaptation="dual-averaging")
    (directory / checkpointing.RUN_FILE).write_text(json.dumps({
        "format": checkpointing.FORMAT, "chunk_size": 10, "checkpoint_every": 100, "fingerprint": stored}))
    model, x = MODEL, change.pop("x_obs", X)
    only_one = "model" not in change  # another model differs in several ways; any other change in that one only
    if change.get("model") == "other":
        model = dgm.GenerativeModel(lambda u: MODEL.generator(u) + 1e-3 * u[2], 3, name="curved")
    elif change.get("model") == "wider":
        model = dgm.GenerativeModel(lambda u: MODEL.generator(u[:3]) + u[3], 4, name="curved")
    change.pop("model", None)
    with pytest.raises(ValueError, match="differs from the checkpointed run") as error:
        dgm.sample(model, x, resume=directory, chain_method="sequential", **{**SETTINGS, **change})
    assert expected in str(error.value), str(error.value)
    assert not only_one or str(error.value).count(" in the checkpoint") == 1, str(error.value)


def test_bad_checkpoint_arguments_are_clear_errors(tmp_path):
    for every in (0, -10, 1.5, True, "10"):
        with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
            dgm.sample(MODEL, X, checkpoint=tmp_path / "a", checkpoint_every=every, **SETTINGS)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint=DIR"):
        dgm.sample(MODEL, X, checkpoint_every=10, **SETTINGS)
    with pytest.raises(ValueError, match="name different directories"):
        dgm.sample(MODEL, X, checkpoint=tmp_path / "a", resume=tmp_path / "b", **SETTINGS)
    with pytest.raises(ValueError, match="does not exist"):
        dgm.sample(MODEL, X, resume=tmp_path / "missing", **SETTINGS)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(ValueError, match="is not a dgm checkpoint directory"):
        dgm.sample(MODEL, X, resume=tmp_path / "other", **SETTINGS)
    with pytest.raises(ValueError, match="refusing to write into it"):
        dgm.sample(MODEL, X, checkpoint=tmp_path / "other", **SETTINGS)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        dgm.sample(MODEL, X, resume=tmp_path / "bad", **SETTINGS)
    assert not (tmp_path / "a").exists()  # nothing was written by the refused calls


def test_an_existing_run_is_not_overwritten_and_checkpoint_with_resume_starts_or_continues(tmp_path, reference):
    directory = tmp_path / "run"
    first = dgm.sample(MODEL, X, checkpoint=directory, resume=directory, **SETTINGS)  # nothing there: starts
    assert_same_run(first, reference)
    with pytest.raises(ValueError, match="already holds a run"):
        dgm.sample(MODEL, X, checkpoint=directory, **SETTINGS)
    assert_same_run(dgm.sample(MODEL, X, checkpoint=directory, resume=directory, **SETTINGS), reference)


def test_lotka_volterra_command_checkpoints_and_resumes(tmp_path, capsys):
    from dgm.cli import main

    common = ["lotka-volterra", "--methods", "chmc", "--chains", "2", "--warmup", "10", "--samples", "20",
              "--no-progress"]
    assert main(common + ["--checkpoint", str(tmp_path / "ck"), "--checkpoint-every", "10",
                          "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "ck" / "chmc" / "run.json").exists()
    assert main(common + ["--resume", str(tmp_path / "ck"), "--out", str(tmp_path / "b")]) == 0  # loads the run
    first, second = (dgm.load(tmp_path / d / "samples_chmc.nc") for d in "ab")
    np.testing.assert_array_equal(first.inputs, second.inputs)
    capsys.readouterr()
    for argv, message in ((["--resume", str(tmp_path / "none")], "no checkpointed run of chmc there"),
                          (["--checkpoint-every", "0", "--checkpoint", str(tmp_path / "c")], "must be >= 1"),
                          (["--checkpoint", str(tmp_path / "ck"), "--resume", str(tmp_path / "ck")], "not allowed")):
        with pytest.raises(SystemExit) as exit_:
            main(common + argv + ["--out", str(tmp_path / "c")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
