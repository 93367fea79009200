"""dgm.vae.train at scale: a run killed after an epoch resumes bit-identically from its checkpoint, calls of a few
steps give the same numbers as whole-epoch calls, a time budget stops training, dynamic binarisation leaves 0/1 data
unchanged, and a checkpoint of another run is refused.

The resume test fails when the per-step keys depend on where a compiled call starts (checked by hand: replacing
``first + jnp.arange(length)`` by ``jnp.arange(length)`` in ``adam_steps`` breaks the steps-per-call equality).
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

import dgm.pytree_checkpoint as pc
import dgm.vae as V
from dgm.errors import CheckpointError

CFG = V.VAEConfig(data_dim=16, latent_dim=2, hidden=(8,), likelihood="bernoulli")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    intensities = rng.uniform(size=(200, 16)).astype(np.float32) ** 2
    bits = (rng.uniform(size=(200, 16)) < intensities).astype(np.float32)
    return intensities, bits[:100], bits[100:]


def _leaves(vae):
    import jax

    return [np.asarray(v) for v in jax.tree_util.tree_leaves(vae)]


def test_kill_and_resume_is_bit_identical(data, tmp_path):
    intensities, train_bits, valid_bits = data
    kw = dict(epochs=3, batch_size=25, learning_rate=1e-2, patience=None, seed=3, progress=False, binarise=True)
    reference, ref_hist = V.train(CFG, intensities, valid_bits, **kw)
    in_pieces, _ = V.train(CFG, intensities, valid_bits, steps_per_call=3, **kw)  # 8 steps per epoch: 3 + 3 + 2
    for a, b in zip(_leaves(reference), _leaves(in_pieces)):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "state.npz"
    real, writes = pc.atomic_write, []

    def killed_after_first_epoch(p, blob):
        real(p, blob)
        writes.append(p)
        if len(writes) == 1:
            raise KeyboardInterrupt

    with mock.patch.object(pc, "atomic_write", killed_after_first_epoch), pytest.raises(KeyboardInterrupt):
        V.train(CFG, intensities, valid_bits, checkpoint=path, **kw)
    resumed, hist = V.train(CFG, intensities, valid_bits, checkpoint=path, **kw)
    for a, b in zip(_leaves(reference), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(hist.valid_objective, ref_hist.valid_objective)
    np.testing.assert_array_equal(hist.train_objective, ref_hist.train_objective)
    with pytest.raises(CheckpointError, match="learning_rate: saved 0.01, now 0.02"):
        V.train(CFG, intensities, valid_bits, checkpoint=path, **dict(kw, learning_rate=2e-2))


def test_budget_stops_training_and_binarising_bits_changes_nothing(data):
    _, train_bits, valid_bits = data
    kw = dict(epochs=3, batch_size=25, learning_rate=1e-2, seed=0, progress=False)
    plain, _ = V.train(CFG, train_bits, valid_bits, **kw)
    binarised, _ = V.train(CFG, train_bits, valid_bits, binarise=True, **kw)  # u < 1 and u < 0: the same bits
    for a, b in zip(_leaves(plain), _leaves(binarised)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the same steps, compiled a little differently
    _, hist = V.train(CFG, train_bits, valid_bits, epochs=1000, batch_size=25, seed=0, progress=False,
                      budget_seconds=1e-9, steps_per_call=1)
    assert hist.stopped_by_budget and hist.steps == 1 and len(hist.train_objective) == 1
    with pytest.raises(ValueError, match="needs a Bernoulli likelihood"):
        V.train(V.VAEConfig(data_dim=16, latent_dim=2, hidden=(8,)), train_bits, valid_bits, epochs=1,
                binarise=True, progress=False)
