"""The configuration of a training run, shared by the command line (:mod:`.train`) and the
engine (:mod:`.runner`); importing it loads no torch."""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_choice, check_device, check_float, check_int, check_out_dir

SIGN_WIRES = ("auto", "bits", "int8", "scatter")     # .protocol.SIGN_WIRES
PARALLEL = ("ddp", "fsdp")


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
        check_float("lr", self.lr, low=0, low_open=True)
        check_int("batch", self.batch, minimum=1)
        check_int("steps", self.steps, minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_choice("sign_wire", self.sign_wire, SIGN_WIRES)
        check_choice("parallel", self.parallel, PARALLEL)
        check_choice("randomness", self.randomness, ("shared", "independent"))
        check_choice("on_nonfinite", self.on_nonfinite, ("raise", "skip"))
        if self.simulate_agents is not None:
            check_int("simulate_agents", self.simulate_agents, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        check_float("timeout", self.timeout, low=0, low_open=True)
        check_float("bucket_cap_mb", self.bucket_cap_mb, low=0, low_open=True)
        check_int("log_every", self.log_every, minimum=1)
        check_int("eval_every", self.eval_every, minimum=0)
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1)
        check_device(self.device)
        check_out_dir(self.out, "out")
        return self

    def run_key(self) -> dict:
        """What must match for ``--resume`` to continue this run."""
        keys = ("model", "data", "method", "lr", "batch", "seed", "noise", "sign_wire",
                "randomness", "simulate_agents", "bucket_cap_mb", "parallel")
        return {k: getattr(self, k) for k in keys}
