"""Compression operators with exact wire formats (THEORY.md §1).

``make("randk:ratio=0.1")`` builds a compressor from a spec; every compressor compresses along
the last dimension (leading dims are a batch), knows its ω, its covariance Φ(g) where a closed
form exists, its wire format (``encode``/``decode``) and its exact size in bits.
Specs: ``identity``, ``randk:ratio=R`` | ``randk:k=K``, ``bernoulli:p=P``, ``qsgd:levels=S``,
``natural``, ``topk:ratio=R`` | ``topk:k=K``, ``sign``, ``scaledsign``.
"""

from . import bits
from .base import Compressor, WireMessage, available, make, register
from .quantize import QSGD, Natural
from .sampling import sample_rows_without_replacement, sample_without_replacement
from .sign import ScaledSign, Sign
from .sparse import Bernoulli, Identity, RandK, TopK

__all__ = [
    "QSGD",
    "Bernoulli",
    "Compressor",
    "Identity",
    "Natural",
    "RandK",
    "ScaledSign",
    "Sign",
    "TopK",
    "WireMessage",
    "available",
    "bits",
    "make",
    "register",
    "sample_rows_without_replacement",
    "sample_without_replacement",
]
