"""The square-root factors of the SDE covariances: F Fᵀ = S exactly (algebraic invariants)."""

from __future__ import annotations

import pytest
import torch

from compsde.sde.diffusion import DiagonalCov, DiagRankOneCov, FactorCov


def factor_of(cov) -> torch.Tensor:
    """The (runs, d, m) factor F, read off by applying it to the unit vectors."""
    runs = cov.diagonal().shape[0]
    eye = torch.eye(cov.noise_dim, dtype=torch.float64)
    cols = [cov.apply(eye[k].expand(runs, -1).clone()) for k in range(cov.noise_dim)]
    return torch.stack(cols, dim=-1)


def test_diagonal_factor_squares_to_s(generator):
    diag = torch.rand(3, 6, generator=generator, dtype=torch.float64)
    cov = DiagonalCov(diag)
    f = factor_of(cov)
    torch.testing.assert_close(f @ f.transpose(-1, -2), cov.dense())
    torch.testing.assert_close(cov.diagonal(), diag)


@pytest.mark.parametrize("d", [2, 7, 50])
def test_randk_structure_factor_squares_to_s(generator, d):
    # Rand-k: S = Diag(D) + c g gᵀ with c = −(d−k)/(k(d−1)) < 0 and D = (ω − c) g² + …
    k = max(1, d // 3)
    c = -(d - k) / (k * (d - 1))
    g = torch.randn(4, d, generator=generator, dtype=torch.float64)
    sigma2 = torch.rand(d, generator=generator, dtype=torch.float64)
    diag = (d / k - 1 - c) * g * g + sigma2
    cov = DiagRankOneCov(diag, c, g)
    assert cov.noise_dim == d
    f = factor_of(cov)
    dense = cov.dense()
    torch.testing.assert_close(f @ f.transpose(-1, -2), dense)
    torch.testing.assert_close(cov.diagonal(), torch.diagonal(dense, dim1=-2, dim2=-1))
    assert torch.linalg.eigvalsh(dense).min() > -1e-12   # a covariance: PSD


def test_positive_rank_one_uses_one_extra_normal(generator):
    g = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    cov = DiagRankOneCov(torch.ones(2, 5, dtype=torch.float64), 0.7, g)
    assert cov.noise_dim == 6
    f = factor_of(cov)
    torch.testing.assert_close(f @ f.transpose(-1, -2), cov.dense())


def test_rank_one_with_zero_diagonal_entries():
    # D_j = 0 forces v_j = 0 for a PSD matrix with c < 0; the factor must stay finite.
    diag = torch.tensor([[0.0, 2.0, 3.0]], dtype=torch.float64)
    v = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    cov = DiagRankOneCov(diag, -0.5, v)
    f = factor_of(cov)
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f @ f.transpose(-1, -2), cov.dense())


def test_scaled_covariances(generator):
    g = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    for cov in (DiagonalCov(g * g), DiagRankOneCov(g * g + 1, -0.2, g),
                FactorCov(torch.randn(2, 4, 3, generator=generator, dtype=torch.float64))):
        torch.testing.assert_close(cov.scaled(2.5).dense(), 2.5 * cov.dense())


def test_factor_from_matrix_handles_singular_matrices(generator):
    a = torch.randn(3, 5, 2, generator=generator, dtype=torch.float64)
    s = a @ a.transpose(-1, -2)                         # rank 2: Cholesky fails
    cov = FactorCov.from_matrix(s)
    torch.testing.assert_close(cov.dense(), s)
    with pytest.raises(ValueError, match="square"):
        FactorCov.from_matrix(torch.ones(2, 3, dtype=torch.float64))


def test_inconsistent_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        DiagRankOneCov(torch.ones(2, 3), -0.1, torch.ones(2, 4))
    with pytest.raises(ValueError, match="one sign"):
        DiagRankOneCov(torch.ones(2, 3), torch.tensor([0.1, -0.1]), torch.ones(2, 3))
