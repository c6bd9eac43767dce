"""Streaming Welford moments: exact algebra against batch formulas, unbiased kurtosis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from compsde.diagnose import Welford


def test_streaming_equals_batch_formulas(generator):
    x = torch.randn(203, 9, generator=generator, dtype=torch.float64) * 3 + 1
    x[:, 0] = x[:, 0] ** 3          # a skewed, heavy coordinate
    w = Welford(9)
    w.update(x[:10])
    for row in x[10:50]:
        w.update(row)
    w.update(x[50:])
    xn = x.numpy()
    assert w.count == 203
    np.testing.assert_allclose(w.mean.numpy(), xn.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.variance.numpy(), xn.var(0, ddof=1), rtol=1e-11)
    np.testing.assert_allclose(w.skewness.numpy(), stats.skew(xn, axis=0), rtol=1e-9)
    np.testing.assert_allclose(w.excess_kurtosis.numpy(),
                               stats.kurtosis(xn, axis=0, bias=False), rtol=1e-9)


def test_merge_is_order_free(generator):
    x = torch.randn(64, 5, generator=generator, dtype=torch.float64).exp()
    a, b, whole = Welford(5), Welford(5), Welford(5)
    a.update(x[:20])
    b.update(x[20:])
    whole.update(x)
    merged = a.merge(b)
    for name in ("mean", "m2", "m3", "m4"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name),
                                   rtol=1e-12, atol=1e-12)


def test_excess_kurtosis_is_unbiased_for_gaussian(generator):
    # G2 is unbiased under normality; its exact variance is
    # 24 n (n−1)² / ((n−3)(n−2)(n+3)(n+5)); the mean over d independent coordinates has
    # standard error √(Var/d), and we allow 5 of them.
    n, d = 32, 4000
    w = Welford(d).update(torch.randn(n, d, generator=generator, dtype=torch.float64))
    var = 24 * n * (n - 1) ** 2 / ((n - 3) * (n - 2) * (n + 3) * (n + 5))
    assert abs(float(w.excess_kurtosis.mean())) <= 5 * math.sqrt(var / d)


def test_constant_coordinate_and_errors():
    w = Welford(2).update(torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0], [1.0, 4.0]]))
    assert float(w.variance[0]) == 0.0
    assert float(w.excess_kurtosis[0]) == 0.0
    with pytest.raises(ValueError, match="x must have shape"):
        w.update(torch.zeros(3))
    with pytest.raises(ValueError, match="variance needs at least 2"):
        _ = Welford(3).update(torch.zeros(3)).variance
