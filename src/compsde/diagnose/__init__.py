"""Know your noise: measure a model's gradient noise and curvature (THEORY.md §1, §3, §6).

- :mod:`.stats` — streaming per-coordinate moments (Welford);
- :mod:`.tails` — Student-t fit of ν and scales (split-panel jackknife), Hill index, kurtosis;
- :mod:`.curvature` — λ_max of the Hessian by power iteration on Hessian-vector products;
- :mod:`.omega` — the ω a compressor shows on real gradients;
- :mod:`.measure` — all of it for a model + data + loss, or a test function + noise law.
"""

from .curvature import EigenEstimate, function_hvp, model_hvp, top_eigenvalue
from .measure import (
    DEFAULT_COMPRESSORS,
    NoiseMeasurement,
    measure_gradients,
    measure_landscape,
    measure_model,
    model_gradients,
)
from .omega import OmegaEstimate, OmegaMeter
from .stats import Welford
from .tails import HillEstimate, StudentTFit, fit_student_t, hill, nu_from_kurtosis

__all__ = [
    "DEFAULT_COMPRESSORS",
    "EigenEstimate",
    "HillEstimate",
    "NoiseMeasurement",
    "OmegaEstimate",
    "OmegaMeter",
    "StudentTFit",
    "Welford",
    "fit_student_t",
    "function_hvp",
    "hill",
    "measure_gradients",
    "measure_landscape",
    "measure_model",
    "model_gradients",
    "model_hvp",
    "nu_from_kurtosis",
    "top_eigenvalue",
]
