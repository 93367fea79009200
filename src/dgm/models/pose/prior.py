r"""The learnt pose prior: a Gaussian VAE over the joint angles as (cos, sin) pairs (paper, Appendix E).

**Representation.** Each of the 31 angles ``a_k`` is embedded as the pair ``(cos a_k, sin a_k)``; the VAE
(:mod:`dgm.vae`, Gaussian likelihood, identity output) is trained on the 62-vectors ``[cos a; sin a]``. Generating
(Algorithm 2's ``g_z`` for the angles)::

    h ~ N(0, I_L),   m = decoder_mean(h) = [m_1; m_2],   r_i = m_i + sigma n_i  (n_1, n_2 ~ N(0, I_31)),
    a = atan2(r_2, r_1).

This is the paper's construction (no cut point at +-pi, the angle distribution only implicitly defined but the
generator differentiable in ``(h, n_1, n_2)``) rather than the project's von Mises latents: the von Mises VAE puts the
circle in the *latent* space, whereas here the *data* are circular and 31 correlated angles must come out of one
joint code; the (cos, sin) decoder gives that with an ordinary Gaussian VAE.

**One difference from the paper**, said plainly: the paper's decoder outputs a log-variance per coordinate and trains
on ``r = exp(n) (cos a, sin a)`` with a random radius ``n ~ N(0, 1)``; :mod:`dgm.vae` has one learnt output scale
``sigma`` shared by all coordinates, so the training pairs are the unit vectors themselves (a random radius would
inflate the shared ``sigma``). Per-angle spread is still learnt: the angle noise is about ``sigma / |m_k|``, and the
decoder sets the radius ``|m_k|`` per angle and per code.

**Training** (:func:`train_prior`): the 1,620 DeepMimic frames (every 10th frame held out for validation and early
stopping), Adam, deterministic seed; the shipped checkpoint ``data/pose_prior.eqx`` (+ ``.json``) is written by
``dgm pose --train-prior`` and loaded with :func:`dgm.vae.load` checking its hyper-parameters (``expect=``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from dgm import vae as vae_lib
from dgm.models.pose.skeleton import load_motion_data

CHECKPOINT = "pose_prior.eqx"
N_ANGLES = 31
PRIOR_CONFIG = vae_lib.VAEConfig(data_dim=2 * N_ANGLES, latent_dim=8, hidden=(128, 128), activation="tanh",
                                 likelihood="gaussian", sigma=0.1, learn_sigma=True, output_activation="identity")
TRAINING = dict(epochs=1500, batch_size=100, learning_rate=2e-3, patience=100, seed=0)
"""Training settings of the shipped prior (``dgm pose --train-prior``)."""


def angles_to_pairs(angles) -> np.ndarray:
    """``(n, A)`` angles -> ``(n, 2A)`` training vectors ``[cos a; sin a]``."""
    angles = np.asarray(angles, np.float64)
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=-1)


def pairs_to_angles(r: jax.Array) -> jax.Array:
    """``[r_1; r_2]`` (last axis ``2A``) -> ``atan2(r_2, r_1)``."""
    half = r.shape[-1] // 2
    return jnp.arctan2(r[..., half:], r[..., :half])


def split_data(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation frames: every 10th frame is held out."""
    idx = np.arange(angles.shape[0])
    return angles[idx % 10 != 0], angles[idx % 10 == 0]


def train_prior(*, epochs: Optional[int] = None, seed: int = TRAINING["seed"], progress: bool = True):
    """Train the pose VAE on the shipped DeepMimic angles; returns ``(vae, history)``."""
    angles = load_motion_data()["angles"]
    train, valid = split_data(angles)
    settings = dict(TRAINING, seed=seed)
    if epochs is not None:
        settings["epochs"] = int(epochs)
    return vae_lib.train(PRIOR_CONFIG, angles_to_pairs(train).astype(np.float32),
                         angles_to_pairs(valid).astype(np.float32), epochs=settings["epochs"],
                         batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
                         patience=settings["patience"], seed=settings["seed"], progress=progress)


def default_checkpoint() -> Path:
    return Path(str(resources.files("dgm.models.pose").joinpath("data", CHECKPOINT)))


def save_prior(vae, history, path: Optional[Path] = None) -> Path:
    path = default_checkpoint() if path is None else Path(path)
    meta = dict(TRAINING, epochs_run=int(len(history.train_objective)), best_epoch=int(history.best_epoch),
                valid_elbo=float(history.valid_objective[history.best_epoch]), seconds=float(history.seconds),
                data="DeepMimic humanoid3d_* clips (MIT; CMU/SFU mocap), see data/README.md")
    return vae_lib.save(path, vae, metadata=meta)


def load_prior(path: Optional[Path] = None):
    """The trained pose VAE (float32; ``.astype(jnp.float64)`` for manifold work). Raises
    :class:`dgm.vae.CheckpointError` when missing, corrupt or of another architecture than :data:`PRIOR_CONFIG`."""
    path = default_checkpoint() if path is None else Path(path)
    return vae_lib.load(path, expect=PRIOR_CONFIG)


def sample_angles(vae, key, n: int) -> jax.Array:
    """``n`` angle vectors from the prior (``h``, then ``r = m + sigma n``, then atan2)."""
    k_h, k_n = jax.random.split(key)
    dtype = vae.log_sigma.dtype
    h = jax.random.normal(k_h, (n, vae.config.latent_dim), dtype)
    m = jax.vmap(vae.decoder_mean)(h)
    return pairs_to_angles(m + vae.output_sigma * jax.random.normal(k_n, m.shape, dtype))
