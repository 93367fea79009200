"""Two-sample metrics of the SBI benchmark: classifier two-sample test (C2ST) and maximum mean discrepancy (MMD).

Transcribed from sbibm 1.1.0 (``sbibm/metrics/c2st.py``, ``sbibm/metrics/mmd.py`` and the kernel it calls,
``sbibm/third_party/igms/main.py``) in NumPy and scikit-learn, so that scores are comparable with the benchmark's
published ones without torch. Written by hand because sbibm's own functions take torch tensors.

**C2ST** (Lopez-Paz & Oquab 2017; sbibm's settings): z-score both samples with the mean and standard deviation
(``ddof=1``, as ``torch.std``) of the *first* sample, label them 0 and 1, and report the mean accuracy over
``n_folds = 5`` shuffled folds (``KFold(shuffle=True, random_state=seed)``) of an ``MLPClassifier(activation="relu",
hidden_layer_sizes=(10 d, 10 d), max_iter=10000, solver="adam", random_state=seed)`` with ``seed = 1``. 0.5: the
classifier cannot tell the samples apart; 1: it separates them perfectly.

**MMD** (Gretton et al. 2012): the unbiased estimator of ``MMD^2`` with the Gaussian kernel
``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, ``sigma`` the median pairwise distance within the first sample
(sbibm's default ``bandwidth="X"``, ``z_score=False``, ``implementation="tp_sutherland"``):

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (m n)
"""

from __future__ import annotations

import numpy as np

C2ST_SEED = 1
C2ST_FOLDS = 5


def _two_samples(X, Y):
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"two samples of the same dimension are needed, as (n, d) arrays: got {X.shape}, {Y.shape}")
    if min(len(X), len(Y)) < 2:
        raise ValueError("each sample needs at least 2 points")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError("the samples contain non-finite values")
    return X, Y


def c2st(X, Y, seed: int = C2ST_SEED, n_folds: int = C2ST_FOLDS, scoring: str = "accuracy",
         z_score: bool = True) -> float:
    """sbibm's classifier two-sample test: mean cross-validated accuracy of an MLP telling ``X`` from ``Y``.

    ``X``: ``(n, d)``, first sample (sbibm passes the reference posterior samples here; the z-scoring uses its
    mean and standard deviation); ``Y``: ``(m, d)``, the second (the algorithm's samples).
    """
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    X, Y = _two_samples(X, Y)
    if z_score:
        mean, std = X.mean(axis=0), X.std(axis=0, ddof=1)
        X, Y = (X - mean) / std, (Y - mean) / std
    ndim = X.shape[1]
    classifier = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * ndim, 10 * ndim), max_iter=10000,
                               solver="adam", random_state=seed)
    data = np.concatenate((X, Y)).astype(np.float32)  # sbibm hands float32 torch tensors to scikit-learn
    target = np.concatenate((np.zeros(len(X)), np.ones(len(Y))))
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(classifier, data, target, cv=folds, scoring=scoring)
    return float(np.mean(scores))


def _pair_distances(X, block: int = 1024):
    """The distances ``|x_i - x_j|``, ``i < j``, block by block (rows ``start..start+block`` against later rows)."""
    from scipy.spatial.distance import cdist

    for start in range(0, len(X) - 1, block):
        rows = X[start:start + block]
        distances = cdist(rows, X[start:])
        keep = np.arange(distances.shape[1])[None, :] > np.arange(len(rows))[:, None]  # j > i only
        yield distances[keep]


def median_pairwise_distance(X) -> float:
    """``torch.median(torch.pdist(X))``: the lower median (the ``(N - 1) // 2``-th smallest of the ``N`` pairwise
    distances, as torch takes it), in bounded memory: a histogram pass finds the bin holding that order statistic, a
    second pass collects the distances in it (10^4 points have 5 x 10^7 distances; this never holds them all)."""
    X = np.asarray(X, dtype=np.float64)
    n_pairs = len(X) * (len(X) - 1) // 2
    rank = (n_pairs - 1) // 2
    top = max(float(d.max()) for d in _pair_distances(X) if d.size)
    edges = np.linspace(0.0, top, 4097)
    counts = sum(np.histogram(d, bins=edges)[0] for d in _pair_distances(X))
    cumulative = np.cumsum(counts)
    b = int(np.searchsorted(cumulative, rank, side="right"))  # the bin of the rank-th smallest (0-based)
    below = int(cumulative[b - 1]) if b else 0
    low, high = edges[b], edges[b + 1]
    last = b == len(counts) - 1  # np.histogram's last bin includes its right edge
    inside = np.concatenate([d[(d >= low) & ((d <= high) if last else (d < high))] for d in _pair_distances(X)])
    return float(np.partition(inside, rank - below)[rank - below])


def mmd(X, Y) -> float:
    """sbibm's ``MMD^2`` (unbiased, Gaussian kernel, bandwidth the median pairwise distance within ``X``)."""
    from scipy.spatial.distance import cdist

    X, Y = _two_samples(X, Y)
    sigma = median_pairwise_distance(X)
    gamma = 1.0 / (2.0 * sigma ** 2)
    m, n = len(X), len(Y)

    def kernel_sum(A, B, same):
        total = 0.0
        for start in range(0, len(A), 2048):  # blocks: 10^4 x 10^4 kernels without a 800 MB matrix
            block = np.exp(-gamma * cdist(A[start:start + 2048], B, "sqeuclidean"))
            total += block.sum()
        return total - (len(A) if same else 0.0)  # the diagonal k(a, a) = 1 is left out (i != j)

    return float(kernel_sum(X, X, True) / (m * (m - 1)) + kernel_sum(Y, Y, True) / (n * (n - 1))
                 - 2.0 * kernel_sum(X, Y, False) / (m * n))
