"""The Hamiltonian-VAE Gaussian-model experiment at the paper's protocol (dgm.experiments.hvae_gaussian).

* (the vmapped fit equals each data set's lone fit: tests/test_batched_fit.py)
* the convergence criterion on exact paths: a stationary estimate converges, one still moving does not;
* the maximum-likelihood floor equals ``||xbar - Delta||^2 + ||sqrt(S/(N-1)) - sigma||^2`` computed by hand;
* a resumed run from a checkpoint folder loads finished (d, method) runs without training.
"""

from __future__ import annotations

import numpy as np

from dgm.experiments.hvae_gaussian import experiment as hg


def test_convergence_criterion_on_exact_paths():
    d = 2
    delta, sigma = hg.true_parameters(d)
    iterations = np.array([1000, 2000, 3000])
    off = np.array([1.0, 0.0])  # error 1 in Delta
    still = np.stack([np.stack([delta + off, delta + off])] * 3)  # (record, data set, d)
    moving = still.copy()
    moving[-1, 1] += np.array([0.5, 0.0])  # data set 1 moved by 0.5 over the last window; its error is 1.5
    sig = np.broadcast_to(sigma, still.shape)
    ok, rel = hg.convergence(still, sig, iterations, d, window=1000)
    assert ok.tolist() == [True, True] and np.allclose(rel, 0.0)
    ok, rel = hg.convergence(moving, sig, iterations, d, window=1000)
    assert ok.tolist() == [True, False] and np.isclose(rel[1], 0.5 / 1.5)


def test_maximum_likelihood_floor_by_hand():
    d = 4
    stats = hg.simulate(d, 3, n_obs=500, seed=2)
    delta, sigma = hg.true_parameters(d)
    xbar, ss = np.asarray(stats.xbar, float), np.asarray(stats.ss, float)
    by_hand = ((xbar - delta) ** 2).sum(1) + ((np.sqrt(ss / 499) - sigma) ** 2).sum(1)
    np.testing.assert_allclose(hg.maximum_likelihood_error(stats, d), by_hand, rtol=1e-6)


def test_checkpoint_folder_resumes_and_reports_finished_runs(tmp_path):
    kw = dict(dims=(2,), methods=("vb",), n_datasets=2, iterations=40, learning_rate=1e-2, samples=2, n_obs=100,
              record_every=20, progress=False)
    first = hg.run_experiment(checkpoint_dir=tmp_path, **kw)
    assert (tmp_path / "d2_vb.npz").exists()
    again = hg.run_experiment(checkpoint_dir=tmp_path, only_finished=True, **kw)
    assert again["errors"]["vb"][2] == first["errors"]["vb"][2] and not again["missing"]
    none = hg.run_experiment(checkpoint_dir=tmp_path, only_finished=True, **dict(kw, methods=("nf-1",)))
    assert none["missing"] == [[2, "nf-1"]] and none["errors"]["nf-1"] == {}
