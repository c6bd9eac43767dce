"""Recommend a compressor and its hyperparameters from measured gradient noise (THEORY.md §3–6).

:func:`advise` turns a :class:`compsde.diagnose.NoiseMeasurement` into predictions for DSGD,
DCSGD (each measured compressor) and DSignSGD — stationary loss, speed, scaling-rule
adjustments, bytes and time per step — and a recommendation; :mod:`.report` writes the table,
``result.json`` and the PNG; :mod:`.network` holds the alpha-beta model of the collectives.
"""

from .network import comm_seconds, parse_bandwidth, parse_duration, parse_latency
from .predict import ASSUMPTIONS, Advice, Prediction, advise
from .report import plot, save, table

__all__ = ["ASSUMPTIONS", "Advice", "Prediction", "advise", "comm_seconds", "parse_bandwidth",
           "parse_duration", "parse_latency", "plot", "save", "table"]
