r"""Training objectives and the importance-sampled log-likelihood of a VAE.

With ``z_1..z_K ~ q(z | x)`` (reparameterised; implicit gradients for non-Gaussian latents) and importance weights
``log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)``:

* ELBO (Kingma & Welling 2014, eq. 3):  ``L_1 = E_q[log w]``, estimated by ``(1/K) sum_k log w_k``;
* IWAE bound (Burda, Grosse & Salakhutdinov 2016, eq. 8): ``L_K = E[log (1/K) sum_k w_k]``;
  ``L_1 <= L_K <= L_{K+1} <= log p(x)`` (their Theorem 1);
* the importance-sampled log-likelihood (Burda et al. 2016, section 5; Rezende et al. 2014): the estimate
  ``log (1/K) sum_k w_k`` with large ``K`` (5000 in the literature), consistent as ``K -> inf``, biased down
  (it is ``L_K``'s estimator).  Evaluated by :func:`log_likelihood` in chunks of samples with a running
  log-sum-exp accumulated in float64 on the host, so memory is bounded by ``batch_size * chunk_size`` however large
  ``K`` is.  The network runs in the parameters' dtype (float32 by default); ``log w`` in float32 has absolute
  rounding error about ``1e-7 |log w|``, far below the Monte-Carlo error.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from dgm.vae import latents

__all__ = ["log_weights", "elbo", "iwae", "objective_fn", "log_likelihood", "check_data"]


def log_weights(vae, x, key, k: int = 1):
    """``log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)``, ``z_k ~ q(z | x)``; one example ``x`` of shape
    ``(data_dim,)`` -> shape ``(k,)``.  Differentiable in the VAE's parameters (reparameterised draws)."""
    q = vae.encode(x)
    z = latents.rsample(q, key, (k,))
    log_px_z = jax.vmap(lambda zk: vae.log_likelihood_given(x, zk))(z)
    return log_px_z + vae.log_prior(z) - latents.log_prob(q, z)


def elbo(vae, x, key, k: int = 1):
    """Per-example ELBO estimates, ``x`` of shape ``(n, data_dim)`` -> ``(n,)``, averaging ``k`` draws each."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: jnp.mean(log_weights(vae, xi, ki, k)))(x, keys)


def iwae(vae, x, key, k: int):
    """Per-example IWAE bound estimates ``log (1/k) sum_k w_k``, ``x`` of shape ``(n, data_dim)`` -> ``(n,)``."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: logsumexp(log_weights(vae, xi, ki, k)) - math.log(k))(x, keys)


def objective_fn(objective: str):
    """``(vae, x, key, k) -> (n,)`` for ``objective`` in ``("elbo", "iwae")``."""
    if objective == "elbo":
        return elbo
    if objective == "iwae":
        return iwae
    raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")


def check_data(x, data_dim: int, what: str = "x", likelihood: str = "gaussian", dtype=np.float32) -> np.ndarray:
    """``x`` as a ``(n, data_dim)`` numpy array of ``dtype`` (the model's; float32 by default), or a clear error
    (wrong shape, empty, NaN/inf, Bernoulli
    data outside ``[0, 1]``)."""
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != data_dim:
        raise ValueError(f"{what} must have shape (n, data_dim={data_dim}), got {np.shape(x)} "
                         "(flatten images to vectors first)")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"{what} has NaN or infinite entries in {bad} row(s)")
    if likelihood == "bernoulli" and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"a Bernoulli likelihood needs {what} in [0, 1]; got range [{arr.min()}, {arr.max()}]")
    return arr.astype(dtype)


def _encoder_weights(vae, extra, x, key, k):
    return log_weights(vae, x, key, k)


@eqx.filter_jit
def _chunk_log_weights(vae, x, example_ids, chunk_index, root_key, chunk_size: int, weights=_encoder_weights,
                       extra=None):
    """``(batch, chunk_size)`` log-weights; draw ``j`` of chunk ``c`` for example ``i`` uses key
    ``fold_in(fold_in(fold_in(root, i), c), ...)`` so the estimate does not depend on the batch size."""

    def one(xi, i):
        key = jax.random.fold_in(jax.random.fold_in(root_key, i), chunk_index)
        return weights(vae, extra, xi, key, chunk_size)

    return jax.vmap(one)(x, example_ids)


def log_likelihood(vae, x, *, k: int = 1000, seed: int = 0, batch_size: int = 100, chunk_size: int = 100,
                   weights=None, extra=None):
    """Importance-sampled ``log p(x)`` per example (module docstring), a float64 numpy array of shape ``(n,)``.

    ``x``: ``(n, data_dim)`` (or one example ``(data_dim,)``).  ``k`` samples from ``q(z | x)`` per example, drawn
    ``chunk_size`` at a time for ``batch_size`` examples at a time; the log-mean-exp is accumulated in float64 on the
    host.  Reproducible in ``seed`` and independent of ``batch_size``.

    ``weights(vae, extra, x, key, k) -> (k,)`` replaces the encoder's importance weights by another unbiased
    estimator of ``p(x)`` (e.g. a Hamiltonian VAE's flow weights, :func:`dgm.vae.hvae.hvae_log_weights`, with its
    flow as ``extra``); ``None``: draws from ``q(z | x)``.
    """
    if weights is None:
        weights = _encoder_weights
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    for name, v in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    xs = check_data(x, vae.config.data_dim, "x", vae.config.likelihood, vae.log_sigma.dtype)
    n = xs.shape[0]
    chunk = int(min(chunk_size, k))
    n_chunks = -(-k // chunk)
    bs = int(min(batch_size, n))
    root = jax.random.key(seed)
    out = np.empty(n, np.float64)
    for start in range(0, n, bs):
        ids = np.arange(start, start + bs)
        valid = ids < n
        ids = np.where(valid, ids, n - 1)  # pad the last batch by repeating the last example (one compilation)
        xb = jnp.asarray(xs[ids])
        running_max = np.full(bs, -np.inf)
        running_sum = np.zeros(bs)
        for c in range(n_chunks):
            lw = _chunk_log_weights(vae, xb, jnp.asarray(ids), jnp.asarray(c, jnp.int32), root, chunk, weights, extra)
            lw = np.asarray(lw, np.float64)
            lw = lw[:, : min(chunk, k - c * chunk)]  # the last chunk may hold surplus draws: drop them
            lw = np.where(np.isnan(lw), -np.inf, lw)
            new_max = np.maximum(running_max, lw.max(axis=1))
            safe = np.where(np.isfinite(new_max), new_max, 0.0)
            running_sum = running_sum * np.exp(np.where(np.isfinite(running_max), running_max - safe, -np.inf)) \
                + np.exp(lw - safe[:, None]).sum(axis=1)
            running_max = new_max
        with np.errstate(divide="ignore"):
            est = np.where(np.isfinite(running_max), running_max + np.log(running_sum), -np.inf) - math.log(k)
        out[start: start + bs] = est[valid]
    return out
