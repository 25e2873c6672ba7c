"""Healing settings: the :class:`HealConfig` dataclass and its presets.

Defaults follow the appendix of Gromov et al. 2024 (arXiv 2403.17887): LoRA on the feed-forward projections only,
alpha = rank, dropout 0.05, peak learning rate 3e-4 with a cosine schedule and 100 warm-up steps, 5000 steps of
global batch 16 at sequence length 2048, seed 0, QLoRA (4-bit NF4) on GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCHEDULERS = ("cosine", "linear", "constant_with_warmup", "constant")
# Fields that must not change between a run and its resumption (the checkpoint's shapes and batches depend on them).
RESUME_FIELDS = ("rank", "alpha", "target_modules", "batch_size", "grad_accum", "max_length", "load_in_4bit")


@dataclass(frozen=True)
class HealConfig:
    """How to heal a pruned model. Every field name is also the CLI option (``batch_size`` is ``--batch-size``)."""

    rank: int = 64  # LoRA rank r
    alpha: float | None = None  # LoRA scaling numerator; None means alpha = rank (the paper)
    dropout: float = 0.05  # LoRA dropout
    target_modules: tuple[str, ...] | None = None  # None: the family's feed-forward projections (models.ArchSpec)
    steps: int = 5000  # optimizer steps
    lr: float = 3e-4  # peak learning rate
    scheduler: str = "cosine"  # learning-rate schedule after warm-up
    warmup_steps: int = 100
    weight_decay: float = 0.0
    batch_size: int = 4  # sequences per device per micro-batch
    grad_accum: int = 4  # micro-batches per optimizer step: global batch = batch_size * grad_accum * devices
    max_length: int = 2048  # tokens per training sequence
    n_samples: int | None = None  # training sequences; None: steps * global batch (the source may hold fewer)
    eval_samples: int = 32  # held-out ("eval" split) sequences for the loss before and after
    save_steps: int = 500  # checkpoint every this many steps (and when stopped)
    save_total_limit: int | None = 2  # checkpoints kept; None keeps all
    seed: int = 0
    load_in_4bit: bool | None = None  # None: QLoRA on CUDA, full-precision LoRA elsewhere
    gradient_checkpointing: bool = False  # trade compute for memory (always on for 4-bit, as in QLoRA)

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        self._check_positive("rank", "steps", "batch_size", "grad_accum", "save_steps", "eval_samples")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha must be positive (or None for alpha = rank), got {self.alpha}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.n_samples is not None and self.n_samples < self.batch_size:
            raise ValueError(f"n_samples must be at least batch_size={self.batch_size}, got {self.n_samples}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 or None, got {self.save_total_limit}")
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("target_modules must name at least one module (or be None for the default)")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def lora_alpha(self) -> float:
        """The LoRA alpha actually used (alpha = rank unless set)."""
        return float(self.rank if self.alpha is None else self.alpha)

    def global_batch(self, world_size: int = 1) -> int:
        """Sequences per optimizer step over all devices."""
        return self.batch_size * self.grad_accum * world_size

    def replace(self, **changes) -> HealConfig:
        """A copy with ``changes`` applied (``None`` values are ignored, so CLI options can be passed as they are)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown heal setting(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain values, for JSON and the model card."""
        out = dataclasses.asdict(self)
        out["target_modules"] = list(self.target_modules) if self.target_modules else None
        return out


PRESETS: dict[str, HealConfig] = {
    # The paper's recipe (its appendix): rank 64, 5000 steps, global batch 16, sequences of 2048, 100 warm-up steps.
    "paper": HealConfig(),
    # A minute or two on a 2-core CPU for a ~100M model: small rank, two dozen short steps (~12k tokens), a higher
    # rate to make them count. SmolLM2-135M without its best 6-layer block: held-out loss 3.99 -> 3.43.
    "quick-cpu": HealConfig(rank=8, steps=24, lr=2e-3, warmup_steps=2, batch_size=4, grad_accum=1, max_length=128,
                            eval_samples=16, save_steps=8),
}


def preset(name: str, **overrides) -> HealConfig:
    """The preset ``name`` with ``overrides`` applied (``None`` overrides are ignored).

    If ``steps`` is lowered below the preset's warm-up and ``warmup_steps`` is not given, the warm-up is shortened
    to a tenth of the steps.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown heal preset {name!r}; allowed: {', '.join(PRESETS)}")
    base = PRESETS[name]
    steps = overrides.get("steps")
    if steps is not None and overrides.get("warmup_steps") is None and isinstance(steps, int) \
            and 0 < steps <= base.warmup_steps:
        overrides["warmup_steps"] = steps // 10
    return base.replace(**overrides)
