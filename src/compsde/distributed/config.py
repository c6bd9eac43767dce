"""The configuration of a training run, shared by the command line (:mod:`.train`) and the
engine (:mod:`.runner`); importing it loads no torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._checks import check_choice, check_device, check_float, check_int, check_out_dir

SIGN_WIRES = ("auto", "bits", "int8", "scatter", "digits")     # .protocol.SIGN_WIRES
PARALLEL = ("ddp", "fsdp", "hsdp")
SEED_MAX = 2**63 - 1          # torch.Generator.manual_seed takes a signed 64-bit seed
STEPS_MAX = 10**9
THREADS_MAX = 1024


@dataclass
class TrainConfig:
    """Every knob of a training run (the flags of :func:`build_parser`)."""

    model: str = "mlp"
    data: str = "fashion-mnist"
    method: str = "dsignsgd"
    lr: float = 0.01
    batch: int = 64
    steps: int = 500
    seed: int = 0
    noise: str | None = None
    sign_wire: str = "auto"
    parallel: str = "ddp"
    replicas: int | None = None
    randomness: str = "shared"
    on_nonfinite: str = "raise"
    simulate_agents: int | None = None
    checkpoint_every: int = 0
    resume: bool = False
    timeout: float = 300.0
    bucket_cap_mb: float = 25.0
    log_every: int = 10
    eval_every: int = 0
    device: str = "cpu"
    threads: int | None = None
    init_method: str | None = None
    init_from: str | None = None
    out: str = "results/train"
    progress: bool | None = None

    def validate(self) -> TrainConfig:
        from .. import methods
        from .. import noise as noise_module
        from ..nn.data import DATASET_NAMES
        from ..nn.models import MODEL_NAMES

        methods.make(self.method)
        if self.noise:
            noise_module.make(self.noise)
        if self.model.split(":")[0] not in MODEL_NAMES:
            raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; got {self.model!r}")
        if self.data.split(":")[0] not in DATASET_NAMES:
            raise ValueError(f"data must be one of {', '.join(DATASET_NAMES)}; got {self.data!r}")
        check_float("lr", self.lr, low=0, high=1e30, low_open=True)   # 1e30: to provoke NaN
        check_int("batch", self.batch, minimum=1, maximum=10**7)
        check_int("steps", self.steps, minimum=1, maximum=STEPS_MAX)
        check_int("seed", self.seed, minimum=0, maximum=SEED_MAX)
        check_choice("sign_wire", self.sign_wire, SIGN_WIRES)
        check_choice("parallel", self.parallel, PARALLEL)
        check_choice("randomness", self.randomness, ("shared", "independent"))
        check_choice("on_nonfinite", self.on_nonfinite, ("raise", "skip"))
        if self.simulate_agents is not None:
            check_int("simulate_agents", self.simulate_agents, minimum=1, maximum=4096)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        check_float("timeout", self.timeout, low=0, high=7 * 86400, low_open=True)
        check_float("bucket_cap_mb", self.bucket_cap_mb, low=0, high=1e5, low_open=True)
        check_int("log_every", self.log_every, minimum=1)
        check_int("eval_every", self.eval_every, minimum=0)
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1, maximum=THREADS_MAX)
        self._check_combinations()
        if self.init_from is not None and not os.path.isfile(self.init_from):
            raise ValueError(f"init_from must be a file holding a model's state_dict "
                             f"(torch.save), got {self.init_from!r}")
        check_device(self.device)
        check_out_dir(self.out, "out")
        return self

    def _check_combinations(self) -> None:
        """Flags that contradict each other, refused before any process group forms."""
        from .. import methods

        method = methods.make(self.method)
        signs = method.compressor.name == "sign"   # DSignSGD, Signum
        if method.stateful and self.on_nonfinite == "skip":
            raise ValueError(f"on_nonfinite 'skip' is not supported by {method.spec}: a "
                             f"non-finite gradient would stay in its per-rank state after the "
                             f"skipped step; use --on-nonfinite raise")
        if self.sign_wire != "auto" and not signs:
            raise ValueError(f"sign_wire {self.sign_wire!r} is DSignSGD's wire; method "
                             f"{self.method} has no sign wire (leave --sign-wire at auto)")
        if self.parallel == "fsdp" and self.sign_wire not in ("auto", "scatter"):
            raise ValueError(f"sign_wire must be auto or scatter with --parallel fsdp (FSDP2's "
                             f"reduce-scatter keeps a shard, no all-gather), got "
                             f"{self.sign_wire!r}")
        if self.simulate_agents is not None and self.parallel != "ddp":
            raise ValueError(f"parallel {self.parallel!r} cannot be combined with "
                             f"--simulate-agents (simulated agents hold whole models); drop "
                             f"one of them")
        if self.parallel == "hsdp":
            if self.replicas is None:
                raise ValueError("replicas is needed with --parallel hsdp: R nodes of S ranks "
                                 "each, R·S = the world size (e.g. --replicas 2)")
            check_int("replicas", self.replicas, minimum=2)
            world = os.environ.get("WORLD_SIZE")
            if world is not None and int(world) % self.replicas:
                raise ValueError(f"replicas must divide the world size {world} (R·S ranks), "
                                 f"got {self.replicas}")
            if world is None:
                raise ValueError("parallel 'hsdp' needs several ranks: launch with torchrun "
                                 "--nproc-per-node R·S (and --replicas R)")
        elif self.replicas is not None:
            raise ValueError(f"replicas is only for --parallel hsdp, got --replicas "
                             f"{self.replicas} with --parallel {self.parallel}")

    def run_key(self) -> dict:
        """What must match for ``--resume`` to continue this run."""
        keys = ("model", "data", "method", "lr", "batch", "seed", "noise", "sign_wire",
                "randomness", "simulate_agents", "bucket_cap_mb", "parallel", "replicas",
                "init_from")
        return {k: getattr(self, k) for k in keys}
