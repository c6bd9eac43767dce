"""Argument checks shared by every layer: one rule for number types, devices, vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compsde._checks import check_device, check_float, check_int, check_vector


def test_text_is_refused_only_where_numbers_must_be_numbers():
    assert check_int("k", "5") == 5 and check_float("p", "0.5") == 0.5   # spec values
    for bad in ("5", b"5"):
        with pytest.raises(ValueError, match=r"^steps must be an integer"):
            check_int("steps", bad, text=False)
        with pytest.raises(ValueError, match=r"^lr must be a finite number"):
            check_float("lr", bad, text=False)
    assert check_int("steps", np.int64(3), text=False) == 3
    assert check_int("steps", 2.0, text=False) == 2
    with pytest.raises(ValueError, match=r"^steps"):
        check_int("steps", 1.5, text=False)
    with pytest.raises(ValueError, match=r"^seed"):
        check_int("seed", True, text=False)


def test_vectors():
    assert check_vector("x0", 2).item() == 2.0
    assert check_vector("x0", [1, 2]).tolist() == [1.0, 2.0]
    assert check_vector("x0", np.ones((2, 3))).shape == (2, 3)
    assert check_vector("x0", torch.ones(3, dtype=torch.float32)).dtype == torch.float64
    for bad in ("a", [1, "a"], [True, False], None, [[1, 2], [3]], torch.ones(2) > 0):
        with pytest.raises(ValueError, match=r"^x0 must be a number"):
            check_vector("x0", bad)


def test_devices():
    assert check_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "banana", 3.5, "meta"):
        with pytest.raises(ValueError, match=r"^device must be cpu or cuda"):
            check_device(bad)
    with pytest.raises(ValueError, match=r"^device 'cuda:99' is not available"):
        check_device("cuda:99")
