"""The paper's MNIST in-painting experiment (Appendix F, Figures 6-7): constrained HMC against HMC on a VAE decoder.

A Gaussian VAE with a 50-dimensional code ``h`` is trained on MNIST (or loaded from a cache) and used as a generator
with fixed output noise ``sigma = 0.05`` (the original's). Its decoder is trained at a larger output noise,
``train_sigma = 0.2``: trained at 0.05 (tried: 46 epochs on all 50,000 images) the reconstruction term swamps
the KL term, the codes of the training images fill only part of ``N(0, I)`` and decoder means at prior draws -- and so
the in-paintings -- are ink blots, not digits; at 0.2 they are digits. The report gives the importance-sampled test
log-likelihood of the generator that is sampled (``sigma = 0.05``) and of the trained VAE, and a grid of decoder means
at prior draws beside Figure 6's completions, so the model can be judged apart from the samplers. For a test digit
and a model sample the top quarter (first 7 rows, 196 pixels) is observed and the rest in-painted by

(a) constrained HMC (:func:`dgm.sample`, ``method="chmc"``) on the decoder-plus-noise generator ``u = (h, n_O)``,
    ``x_O = mean(h)[O] + sigma n_O`` (:class:`dgm.vae.generator.DecoderGenerator`), which declares additive-noise
    structure, so the manifold work runs on the linear-time additive geometry (an ``L x L`` capacitance, ``L = 50``),
    with trajectories of its own length (:data:`CHMC_STEPS`, or ``chmc_method="chmc-dynamic"``);
(b) the paper's baseline: BlackJAX HMC (``method="hmc"``, :data:`HMC_STEPS`) on the known conditional density
    ``log p(h | x_O) = log N(h; 0, I) + log N(x_O; mean(h)[O], sigma^2 I)``.

Both give draws of ``h``; the unobserved pixels are then drawn from their exact Gaussian given ``h``. Both start from
the same prior draws of ``h`` (constrained HMC with the noise that reproduces ``x_O``), adapt one step size each by
dual averaging during warm-up and get the same wall-clock budget: HMC runs ``k`` times as many warm-up and sampling
iterations, ``k`` the measured ratio of times per iteration. Efficiency is ArviZ bulk ESS of ``h`` per second of
run time (warm-up + sampling, compilation excluded).

Tests use ``dataset="digits"`` (scikit-learn's 8x8 digits, top 2 rows observed): nothing here needs MNIST.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

import dgm
from dgm.reports import fixed_width, markdown
from dgm.vae.generator import DecoderGenerator

LATENT_DIM = 50
SIGMA = 0.05
HIDDEN = (200, 200)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    name: str
    observed_rows: int  # the top rows observed
    latent_dim: int
    hidden: tuple
    epochs: int
    quick_epochs: int
    quick_train: int  # training images of the short training (--vae-training short, in --quick)
    train_sigma: float = SIGMA  # the decoder's output noise during training (the generator uses SIGMA)
    patience: int = 5  # epochs without validation improvement before training stops


DATASETS = {
    "mnist": DataSpec("mnist", 7, LATENT_DIM, HIDDEN, 100, 2, 5000, train_sigma=0.2, patience=10),
    "digits": DataSpec("digits", 2, 10, (64, 64), 60, 5, 1197),
}


def load_dataset(name: str):
    """The images (``dgm.datasets``); a missing data set raises ``DatasetNotFoundError`` with the install command."""
    from dgm import datasets

    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return datasets.mnist() if name == "mnist" else datasets.digits()


def image_shape(dataset) -> tuple[int, int]:
    side = int(round(np.sqrt(dataset.train.shape[1])))
    if side * side != dataset.train.shape[1]:
        raise ValueError(f"expected square images, got {dataset.train.shape[1]} pixels per image")
    return side, side


def top_rows_mask(shape: tuple[int, int], rows: int) -> np.ndarray:
    """``True`` on the first ``rows`` rows of an image of ``shape`` (the observed region)."""
    if not 0 < rows < shape[0]:
        raise ValueError(f"observed rows must be in 1..{shape[0] - 1}, got {rows}")
    mask = np.zeros(shape, bool)
    mask[:rows] = True
    return mask


# -- the VAE: train or load ---------------------------------------------------------------------------------------
def train_or_load(dataset, spec: DataSpec, *, cache: Optional[Path], quick: bool, seed: int, progress: bool):
    """A trained Gaussian VAE (``sigma = spec.train_sigma`` fixed, sigmoid means, tanh MLPs) and a dict describing
    it.

    With ``cache`` the checkpoint ``{cache}/vae-{dataset}-{tag}.eqx`` is loaded when present (its config must match)
    and written after training; training itself is resumable (``{cache}/vae-{dataset}-{tag}.train.npz``, written
    after every epoch: a killed run continues where it stopped).
    """
    from dgm import vae as vae_lib

    config = vae_lib.VAEConfig(data_dim=dataset.train.shape[1], latent_dim=spec.latent_dim, hidden=spec.hidden,
                               activation="tanh", likelihood="gaussian", sigma=spec.train_sigma, learn_sigma=False,
                               output_activation="sigmoid")
    epochs = spec.quick_epochs if quick else spec.epochs
    n_train = spec.quick_train if quick else dataset.train.shape[0]
    tag = f"{'quick' if quick else 'full'}-seed{seed}" + ("" if spec.train_sigma == SIGMA else
                                                          f"-sigma{spec.train_sigma:g}")
    path = None if cache is None else Path(cache).expanduser() / f"vae-{spec.name}-{tag}.eqx"
    info = dict(config=config.to_dict(), epochs_max=epochs, n_train=n_train, path=str(path) if path else None,
                train_sigma=spec.train_sigma, patience=spec.patience)
    if path is not None and path.exists():
        vae = vae_lib.load(path, expect=config)
        info.update(vae_lib.read_metadata(path), cached=True)
        return vae, info
    state = None if path is None else path.with_suffix(".train.npz")
    vae, history = vae_lib.train(config, dataset.train[:n_train], dataset.valid, epochs=epochs, batch_size=100,
                                 learning_rate=1e-3, patience=spec.patience, seed=seed, progress=progress,
                                 checkpoint=state)
    info.update(train_seconds=float(history.seconds), epochs_run=int(len(history.train_objective)),
                best_epoch=int(history.best_epoch), valid_elbo=float(history.valid_objective[history.best_epoch]),
                cpu_seconds_of_steps=float(np.sum(history.epoch_seconds)), cached=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        vae_lib.save(path, vae, metadata={k: v for k, v in info.items() if k not in ("config", "path", "cached")})
    return vae, info


def held_out_log_likelihood(vae, images, *, k: int, seed: int = 0) -> dict:
    """Importance-sampled ``log p(x)`` (:func:`dgm.vae.log_likelihood`, ``k`` draws of the encoder per image) over
    ``images``: mean, standard error over images, count (nats per image; a density of continuous pixel values, so
    not comparable with binarised-MNIST numbers)."""
    from dgm.vae import log_likelihood

    values = log_likelihood(vae, images, k=k, seed=seed, batch_size=100, chunk_size=min(k, 100))
    return dict(mean=float(np.mean(values)), se=float(np.std(values, ddof=1) / np.sqrt(values.size)) if values.size > 1
                else float("nan"), images=int(values.size), samples=int(k))


# -- one in-painting problem --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    label: str  # e.g. "test digit 0 (label 7)" or "model sample 0"
    image: np.ndarray  # (H, W) the full image (ground truth)
    x_obs: np.ndarray  # observed pixels
    chmc: Optional[dgm.Result] = None
    hmc: Optional[dgm.Result] = None
    hmc_iterations_per_chmc: float = 1.0


def make_cases(vae, dataset, mask, *, n_digits: int, n_model_samples: int, seed: int) -> list[Case]:
    shape = mask.shape
    cases = []
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.test_labels)
    for i in rng.choice(dataset.test.shape[0], size=n_digits, replace=False):
        img = np.asarray(dataset.test[i], np.float64).reshape(shape)
        label = f" (label {int(labels[i])})" if labels.shape == dataset.test.shape[:1] else ""
        cases.append(Case(f"test digit #{int(i)}{label}", img, img[mask]))
    if n_model_samples:
        _, xs = vae.sample(jax.random.key(seed + 1), n_model_samples)
        for j, x in enumerate(np.asarray(xs, np.float64)):
            img = x.reshape(shape)
            cases.append(Case(f"model sample {j}", img, img[mask]))
    return cases


def initial_codes(key, latent_dim: int, n_chains: int) -> np.ndarray:
    """The same prior draws of ``h`` start both methods."""
    with dgm.float64():
        return np.asarray(jax.random.normal(key, (n_chains, latent_dim), jnp.float64))


HMC_STEPS = (4, 8)
"""HMC's leapfrog steps per iteration, ``N_s ~ U{4..8}`` (the paper's setting)."""
CHMC_STEPS = (8, 16)
"""Constrained HMC's own trajectory length, ``N_s ~ U{8..16}``: its adapted step moves ``h`` further per step than
HMC's but the manifold's curvature still calls for longer trajectories than HMC's (the issue-25 benchmark case: the
ESS/s ratio rose from 0.20-0.24 at ``U{4..8}`` to 0.66-1.10 at ``U{8..16}``); ``chmc_method="chmc-dynamic"`` chooses
the length per transition by the no-U-turn criterion instead."""
CHMC_METHODS = ("chmc", "chmc-dynamic")


def run_case(gen: DecoderGenerator, case: Case, *, chains: int, warmup: int, samples: int, seed: int,
             progress: bool, n_steps=HMC_STEPS, hmc_factor: Optional[float] = None, chmc_method: str = "chmc",
             chmc_steps=CHMC_STEPS) -> Case:
    """Constrained HMC (``chmc_method``: ``"chmc"`` with ``chmc_steps`` leapfrog steps, or ``"chmc-dynamic"``), then
    HMC (``n_steps``) with the same wall-clock budget (``hmc_factor`` times as many iterations; measured by a short
    HMC pilot when not given)."""
    if chmc_method not in CHMC_METHODS:
        raise ValueError(f"chmc_method must be one of {CHMC_METHODS}, got {chmc_method!r}")
    h0 = initial_codes(jax.random.key(seed), gen.latent_dim, chains)
    with dgm.float64():  # on the manifold: the noise that reproduces x_O from each h0 (the exact initialiser)
        noise = (case.x_obs - np.asarray(jax.vmap(gen.observed_mean)(jnp.asarray(h0)))) / gen.sigma
    u0 = np.concatenate([h0, noise], axis=1)
    trajectory = dict(n_steps=chmc_steps) if chmc_method == "chmc" else {}
    case.chmc = dgm.sample(gen.model, case.x_obs, method=chmc_method, n_chains=chains, n_warmup=warmup,
                           n_samples=samples, seed=seed, initial_positions=u0, progress=progress, **trajectory)
    conditional = gen.conditional_model()
    if hmc_factor is None:
        pilot = dgm.sample(conditional, case.x_obs, method="hmc", noise_scale=gen.sigma, n_chains=chains,
                           n_warmup=100, n_samples=400, seed=seed, n_steps=n_steps, initial_positions=h0,
                           progress=False)  # warmed up: an unadapted step size can make the pilot unrepresentative
        per_iteration_hmc = pilot.wall_time / 500
        per_iteration_chmc = case.chmc.wall_time / (warmup + samples)
        hmc_factor = max(1.0, per_iteration_chmc / per_iteration_hmc)
    case.hmc_iterations_per_chmc = float(hmc_factor)
    hmc_warmup, hmc_samples = int(round(warmup * hmc_factor)), int(round(samples * hmc_factor))
    thin = max(1, int(np.ceil(hmc_samples / 5000)))  # keep at most 5000 draws per chain
    case.hmc = dgm.sample(conditional, case.x_obs, method="hmc", noise_scale=gen.sigma, n_chains=chains,
                          n_warmup=hmc_warmup, n_samples=hmc_samples // thin, thin=thin, seed=seed, n_steps=n_steps,
                          initial_positions=h0, progress=progress)
    return case


def code_draws(result: dgm.Result, latent_dim: int) -> np.ndarray:
    """``(chain, draw, L)`` draws of ``h`` (constrained HMC reports ``h`` as its latents, HMC samples it)."""
    return np.asarray(result.latents).reshape(result.n_chains, result.n_draws, -1)[..., :latent_dim]


def efficiency(result: dgm.Result, latent_dim: int) -> dict:
    """ArviZ bulk ESS of every coordinate of ``h``; per second of run time (warm-up + sampling, no compilation)."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = np.asarray(az.ess(code_draws(result, latent_dim), method="bulk"), float)
    iterations = result.n_chains * (int(result.settings.get("n_warmup", 0)) + result.n_draws * result.settings.get(
        "thin", 1))
    return dict(ess_min=float(ess.min()), ess_mean=float(ess.mean()), ess_per_sec_min=float(ess.min() / result.wall_time),
                ess_per_sec_mean=float(ess.mean() / result.wall_time), time=float(result.wall_time),
                compile_time=float(result.compile_time), acceptance=float(result.acceptance_rate),
                step_size=float(np.mean(result.step_size)), iterations=int(iterations),
                ms_per_iteration=1e3 * float(result.wall_time) / max(int(iterations), 1),
                max_residual=float(result.max_residual))


def in_paintings(gen: DecoderGenerator, result: dgm.Result, x_obs, *, chain: int = 0, every: int = 1,
                 limit: int = 400, seed: int = 0) -> np.ndarray:
    """Completed images ``(n, data_dim)`` from one chain: draws ``0, every, 2 every, ...`` (at most ``limit``)."""
    h = code_draws(result, gen.latent_dim)[chain, ::every][:limit]
    with dgm.float64():
        return gen.complete(jax.random.key(seed), jnp.asarray(h), x_obs)


def run_experiment(*, dataset: str = "mnist", cache: Optional[Path] = None, quick: bool = False, chains: int = 4,
                   warmup: int = 200, samples: int = 300, n_digits: int = 2, n_model_samples: int = 1, seed: int = 0,
                   progress: bool = True, out: Optional[Path] = None, chmc_method: str = "chmc") -> dict:
    """Train/load the VAE, run every case, save samples to ``out`` (NetCDF), return everything for the report."""
    spec = DATASETS.get(dataset)
    if spec is None:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    data = load_dataset(dataset)
    shape = image_shape(data)
    mask = top_rows_mask(shape, spec.observed_rows)
    t0 = time.perf_counter()
    trained, vae_info = train_or_load(data, spec, cache=cache, quick=quick, seed=seed, progress=progress)
    vae_info["load_or_train_seconds"] = time.perf_counter() - t0
    vae = trained if spec.train_sigma == SIGMA else trained.with_output_sigma(SIGMA)  # the generator sampled
    n_ll, k_ll = (200, 100) if quick else (1000, 1000)
    t0 = time.perf_counter()
    vae_info["test_log_likelihood"] = held_out_log_likelihood(vae, data.test[:n_ll], k=k_ll, seed=seed)
    if spec.train_sigma != SIGMA:
        vae_info["test_log_likelihood_trained"] = held_out_log_likelihood(trained, data.test[:n_ll], k=k_ll,
                                                                          seed=seed)
    vae_info["log_likelihood_seconds"] = time.perf_counter() - t0
    cases = make_cases(vae, data, mask, n_digits=n_digits, n_model_samples=n_model_samples, seed=seed)
    with dgm.float64():
        gen = DecoderGenerator(vae.astype(jnp.float64), mask, name=f"vae-decoder-{dataset}")
    for i, case in enumerate(cases):
        if progress:
            print(f"\n== {case.label}: {gen.observed.size} observed pixels, {gen.unobserved.size} to in-paint ==")
        run_case(gen, case, chains=chains, warmup=warmup, samples=samples, seed=seed + 10 * i, progress=progress,
                 chmc_method=chmc_method)
        if out is not None:
            for name in ("chmc", "hmc"):
                getattr(case, name).save(Path(out) / f"samples_case{i}_{name}.nc")
    return dict(gen=gen, cases=cases, vae_info=vae_info, mask=mask, shape=shape, spec=spec, dataset=dataset,
                vae=vae)


def table_rows(experiment: dict) -> list[dict]:
    rows = []
    for case in experiment["cases"]:
        for name in ("chmc", "hmc"):
            row = efficiency(getattr(case, name), experiment["gen"].latent_dim)
            row.update(case=case.label, method=name)
            rows.append(row)
    return rows


COLUMNS = [("case", "{}"), ("method", "{}"), ("time", "{:.1f}"), ("iterations", "{:d}"), ("ms_per_iteration", "{:.2f}"),
           ("acceptance", "{:.2f}"), ("step_size", "{:.3g}"), ("ess_min", "{:.0f}"), ("ess_mean", "{:.0f}"),
           ("ess_per_sec_min", "{:.3g}"), ("ess_per_sec_mean", "{:.3g}")]
HEADERS = ["case", "method", "time (s)", "iterations", "ms/iter", "accept", "step", "ESS h (min)", "ESS h (mean)",
           "ESS/s (min)", "ESS/s (mean)"]


def format_rows(rows: list[dict]) -> list[list[str]]:
    return [[fmt.format(row[key]) for key, fmt in COLUMNS] for row in rows]


def text_table(rows: list[dict]) -> str:
    return fixed_width(HEADERS, format_rows(rows))


def markdown_table(rows: list[dict]) -> str:
    return markdown(HEADERS, format_rows(rows))


def dump_json(rows: list[dict], vae_info: dict, path: Path) -> None:
    path.write_text(json.dumps(dict(rows=rows, vae=vae_info), indent=2, default=str))
