"""Reproductions of the paper's figures, one module per figure, found through the registry."""

from .registry import FIGURES, FigureOutcome, figure, load_all

__all__ = ["FIGURES", "FigureOutcome", "figure", "load_all"]
