"""A small decoder-only transformer language model (GPT-style), in plain torch.

Tokens ``x (batch, T)`` (int64, ids < vocab) → token embedding + learned position embedding →
``depth`` pre-norm blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` with *causal* self-attention
(``F.scaled_dot_product_attention(..., is_causal=True)``: position t attends to 0..t only) →
LayerNorm → logits through the *tied* output layer ``h · E^T`` (E the token embedding).

The logits come back as ``(batch, vocab, T)``, the layout ``F.cross_entropy(logits, y)`` takes
for targets ``y (batch, T)``: every trainer in compsde computes the mean next-token
cross-entropy with the same call it uses for image classifiers.

Spec ``gpt[:size=small,dim=,depth=,heads=,mlp=]``; the context length T and the vocabulary come
from the data (``compsde.nn.text``). Presets (``size``):

- ``tiny``  — dim 32, depth 1, 2 heads (tests);
- ``small`` — dim 64, depth 2, 4 heads, MLP ratio 4 (2 CPU cores; the default);
- ``gpu``   — dim 384, depth 6, 6 heads, MLP ratio 4 (~11M parameters besides the embeddings).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_float, check_int

MLP_MAX = 64.0  # the largest MLP ratio (hidden = ratio × dim) a gpt spec takes

GPT_PRESETS: dict[str, dict[str, float]] = {
    "tiny": {"dim": 32, "depth": 1, "heads": 2, "mlp": 2.0},
    "small": {"dim": 64, "depth": 2, "heads": 4, "mlp": 4.0},
    "gpu": {"dim": 384, "depth": 6, "heads": 6, "mlp": 4.0},
}


class GPT(nn.Module):
    """Decoder-only transformer with causal attention and tied embeddings (module docstring)."""

    def __init__(self, vocab: int, context: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0):
        super().__init__()
        from .models import _Block

        self.vocab = check_int("vocab", vocab, minimum=2)
        self.context = check_int("context", context, minimum=1)
        heads = check_int("heads", heads, minimum=1)
        if check_int("dim", dim, minimum=1) % heads:
            raise ValueError(f"dim must be a multiple of heads={heads}, got {dim}")
        self.tokens = nn.Embedding(self.vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, self.context, dim))
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio, causal=True)
                                      for _ in range(check_int("depth", depth, minimum=1))])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, vocab, T)`` of the next token at every position of ``x (batch, T)``."""
        t = x.shape[-1]
        if t > self.context:
            raise ValueError(f"sequence length must be at most the context {self.context}, "
                             f"got {t}")
        h = self.tokens(x) + self.pos[:, :t]
        h = self.norm(self.blocks(h))
        return (h @ self.tokens.weight.T).transpose(1, 2)


def gpt_options(options: dict[str, str]) -> dict[str, float]:
    """Preset ``size`` (default small), overridden by explicit ``dim``/``depth``/``heads``/``mlp``.
    """
    size = check_choice("size", options.get("size", "small"), tuple(GPT_PRESETS))
    config = dict(GPT_PRESETS[size])
    for key in ("dim", "depth", "heads"):
        if key in options:
            config[key] = check_int(key, options[key], minimum=1)
    if "mlp" in options:
        try:
            config["mlp"] = check_float("mlp", options["mlp"], low=0, low_open=True,
                                        high=MLP_MAX)
        except ValueError:
            raise ValueError(f"mlp of gpt must be a number in (0, {MLP_MAX:g}] (the MLP's "
                             f"hidden width over dim), got {options['mlp']!r}") from None
    return config


def gpt_parameters(vocab: int, context: int, dim: int, depth: int, mlp_ratio: float) -> int:
    """The parameter count of :class:`GPT` (tied embeddings), computed without building it."""
    hidden = max(1, round(dim * mlp_ratio))
    block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) \
        + (dim * hidden + hidden) + (hidden * dim + dim)
    return vocab * dim + context * dim + depth * block + 2 * dim


def build_gpt(options: dict[str, str], input_shape: tuple[int, ...], vocab: int) -> GPT:
    """The GPT of ``options`` for token windows of shape ``(T,)`` and ``vocab`` token ids."""
    if len(input_shape) != 1:
        raise ValueError(f"model 'gpt' needs token windows of shape (T,) (data 'text'), got "
                         f"inputs of shape {tuple(input_shape)}; use --data text")
    c = gpt_options(options)
    from .models import check_model_size

    spec = "gpt:" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "gpt"
    check_model_size(spec, gpt_parameters(vocab, int(input_shape[0]), int(c["dim"]),
                                          int(c["depth"]), float(c["mlp"])), "dim, depth or mlp")
    return GPT(vocab, int(input_shape[0]), dim=int(c["dim"]), depth=int(c["depth"]),
               heads=int(c["heads"]), mlp_ratio=float(c["mlp"]))
