"""Models for the real-training side: MLP, CIFAR-style ResNet and a small ViT, in plain torch.

torchvision is not available beside the pinned torch (docs/DESIGN.md, "Environment"), so every
layer here is built from ``torch.nn`` primitives. All models take images ``(batch, C, H, W)``
and return logits ``(batch, classes)``. They are used by the torchrun trainer
(``compsde.distributed.train``) and by the figure reproductions that train real networks
(THEORY.md §7, figures 2 and 4).

Specs (parsed like every other spec in compsde, ``NAME[:KEY=VALUE,...]``):

- ``mlp[:hidden=256/128]`` — flatten, then Linear+ReLU layers of the given widths.
- ``resnet[:depth=8,width=16]`` — CIFAR ResNet (He et al. 2016, §4.2) with 3 stages of
  ``(depth−2)/6`` basic blocks, widths ``width·(1, 2, 4)``: depth 8 (quick, ~78k parameters),
  20, 32, …; ``depth=18`` gives the ImageNet-style ResNet-18 layout (4 stages of 2 blocks,
  widths ``width·(1, 2, 4, 8)``, default width 64, ~11M parameters) with a CIFAR stem.
- ``vit[:dim=64,depth=4,heads=4,patch=4,mlp=2]`` — pre-norm ViT with a class token; ViT-S-like
  is ``vit:dim=384,depth=12,heads=6,mlp=4`` (~21.7M parameters).
- ``gpt[:size=small,...]`` — decoder-only transformer language model (:mod:`.gpt`) on token
  windows ``(batch, T)`` of ``--data text``: ``image_shape`` is then ``(T,)`` and ``classes`` the
  vocabulary size; logits come back as ``(batch, vocab, T)``.

Parameters are initialised from an explicit ``torch.Generator`` (``make_model(..., seed=)``),
never from the global RNG, so every rank builds the same model without touching global state.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._checks import check_choice, check_int
from .._spec import parse_float_list, parse_spec, reject_unknown

MODEL_NAMES = ("mlp", "resnet", "vit", "gpt")


class MLP(nn.Module):
    """Flatten the input, then ``Linear → ReLU`` per hidden width and a final ``Linear``."""

    def __init__(self, in_features: int, classes: int, hidden: Sequence[int] = (256, 128)):
        super().__init__()
        widths = [check_int("in_features", in_features, minimum=1)]
        widths += [check_int("hidden", h, minimum=1) for h in hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], check_int("classes", classes, minimum=2)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(8, channels), channels)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (1×1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          _norm(norm, cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stem, stages of basic blocks, global average pool, linear head.

    ``blocks[i]`` basic blocks at width ``widths[i]``; every stage after the first halves the
    resolution. ``norm`` is ``"batch"`` (default) or ``"group"`` (GroupNorm, no running
    statistics, so N simulated agents and N DDP ranks see identical models).
    """

    def __init__(self, in_channels: int, classes: int, blocks: Sequence[int] = (1, 1, 1),
                 widths: Sequence[int] = (16, 32, 64), norm: str = "batch"):
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks and widths must have the same non-zero length, got "
                             f"{tuple(blocks)} and {tuple(widths)}")
        norm = check_choice("norm", norm, ("batch", "group"))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  _norm(norm, widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(check_int("blocks", count, minimum=1)):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(BasicBlock(cin, width, stride, norm))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, check_int("classes", classes, minimum=2))

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``; ``causal``
    restricts position t to attend to positions ≤ t (decoder)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, causal: bool = False):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision transformer (Dosovitskiy et al. 2021): patch embedding, class token, learned
    positions, ``depth`` pre-norm blocks, LayerNorm and a linear head on the class token."""

    def __init__(self, image_shape: Sequence[int], classes: int, dim: int = 64, depth: int = 4,
                 heads: int = 4, patch: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        channels, height, width = (int(s) for s in image_shape)
        patch = check_int("patch", patch, minimum=1)
        if height % patch or width % patch:
            raise ValueError(f"patch must divide the image size {height}x{width}, got {patch}")
        heads = check_int("heads", heads, minimum=1)
        if check_int("dim", dim, minimum=1) % heads:
            raise ValueError(f"dim must be a multiple of heads={heads}, got {dim}")
        tokens = (height // patch) * (width // patch)
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio)
                                      for _ in range(check_int("depth", depth, minimum=1))])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, check_int("classes", classes, minimum=2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def _resnet_layout(depth: int, width: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if depth == 18:
        w = width or 64
        return (2, 2, 2, 2), (w, 2 * w, 4 * w, 8 * w)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth of resnet must be 18 or 6n+2 >= 8 (8, 14, 20, 32, ...), "
                         f"got {depth}")
    w = width or 16
    n = (depth - 2) // 6
    return (n, n, n), (w, 2 * w, 4 * w)


def _int_option(options: dict[str, str], key: str, default: int, minimum: int = 1) -> int:
    return check_int(key, options.get(key, default), minimum=minimum)


def build_model(spec: str, image_shape: Sequence[int], classes: int) -> nn.Module:
    """Build the model named by ``spec`` (module docstring) with torch's default initialisation.

    Uses the *global* RNG for initialisation; prefer :func:`make_model`, which seeds its own
    generator and leaves the global state untouched.
    """
    name, options = parse_spec(spec, "model")
    if name not in MODEL_NAMES:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)} (e.g. 'mlp', "
                         f"'resnet:depth=8', 'vit:dim=64,depth=4', 'gpt:size=tiny'); got "
                         f"{spec!r}")
    shape = tuple(int(s) for s in image_shape)
    if name == "gpt":
        from .gpt import build_gpt

        reject_unknown("model", name, options, {"size", "dim", "depth", "heads", "mlp"})
        return build_gpt(options, shape, classes)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {shape}")
    if name == "mlp":
        reject_unknown("model", name, options, {"hidden"})
        hidden = [256, 128]
        if "hidden" in options:
            hidden = [check_int("hidden", h, minimum=1)
                      for h in parse_float_list("hidden", options["hidden"])]
        return MLP(math.prod(shape), classes, hidden)
    if name == "resnet":
        reject_unknown("model", name, options, {"depth", "width", "norm"})
        depth = _int_option(options, "depth", 8)
        width = _int_option(options, "width", 0, minimum=0) or None
        blocks, widths = _resnet_layout(depth, width)
        return ResNet(shape[0], classes, blocks, widths, norm=options.get("norm", "batch"))
    reject_unknown("model", name, options, {"dim", "depth", "heads", "patch", "mlp"})
    try:
        mlp_ratio = float(options.get("mlp", 2.0))
    except ValueError:
        raise ValueError(f"mlp of vit must be a number > 0, got {options['mlp']!r}") from None
    if not mlp_ratio > 0:
        raise ValueError(f"mlp of vit must be a number > 0, got {mlp_ratio}")
    return ViT(shape, classes, dim=_int_option(options, "dim", 64),
               depth=_int_option(options, "depth", 4), heads=_int_option(options, "heads", 4),
               patch=_int_option(options, "patch", 4), mlp_ratio=mlp_ratio)


def init_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise every parameter and buffer from ``generator`` (the global RNG is not touched).

    Linear/conv weights: Kaiming-uniform with ``a = √5`` and biases ``U(±1/√fan_in)``, the
    distributions torch uses by default; norms: weight 1, bias 0; ViT class token and positions,
    GPT token and position embeddings ``N(0, 0.02²)``.
    """
    from .gpt import GPT

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)          # kaiming_uniform(a=√5) bound
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_running_stats()
            elif isinstance(module, ViT):
                module.cls.normal_(0.0, 0.02, generator=generator)
                module.pos.normal_(0.0, 0.02, generator=generator)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 0.02, generator=generator)
            elif isinstance(module, GPT):
                module.pos.normal_(0.0, 0.02, generator=generator)
    return model


#: float32 copies of the parameters a training or measurement run keeps (weights, gradients,
#: optimizer state, one more for updates and measured gradients)
COPIES = 4


def check_model_size(spec: str, parameters: int, knobs: str = "its size options") -> None:
    """Refuse, before anything is allocated, a model whose ``parameters`` (× ``COPIES`` float32
    numbers) would not fit half this machine's memory (ValueError naming ``model``)."""
    from ..simulation import format_bytes, kept_limit

    need, limit = COPIES * 4 * int(parameters), kept_limit()
    if need > limit:
        raise ValueError(f"model {spec} has {parameters:.3g} parameters: a run needs about "
                         f"{format_bytes(need)} ({COPIES} float32 copies: weights, gradients, "
                         f"optimizer state, updates), more than half this machine's memory "
                         f"({format_bytes(limit)}); lower {knobs}")


def make_model(spec: str, image_shape: Sequence[int], classes: int, *, seed: int = 0,
               device: str | torch.device = "cpu") -> nn.Module:
    """Build the model of ``spec`` initialised from ``torch.Generator().manual_seed(seed)``.

    The same ``seed`` gives bitwise the same parameters on every rank and in every process.
    """
    seed = check_int("seed", seed, minimum=0)
    with torch.device("meta"):                            # no allocation, no global RNG draws
        model = build_model(spec, image_shape, classes)
    check_model_size(spec, sum(p.numel() for p in model.parameters()))
    model.to_empty(device="cpu")
    init_parameters(model, torch.Generator().manual_seed(seed))
    return model.to(device)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (the dimension d of THEORY.md §1)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
