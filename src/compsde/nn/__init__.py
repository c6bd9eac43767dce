"""Real networks and offline data sets for the torchrun trainer and the figure reproductions."""

from .data import DATASET_NAMES, Dataset, load_dataset
from .models import MLP, MODEL_NAMES, ResNet, ViT, count_parameters, make_model

__all__ = ["DATASET_NAMES", "MLP", "MODEL_NAMES", "Dataset", "ResNet", "ViT",
           "count_parameters", "load_dataset", "make_model"]
