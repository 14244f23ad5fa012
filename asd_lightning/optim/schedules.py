"""Learning-rate schedules stepped every optimiser step."""

from __future__ import annotations

import math

import torch


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up from 0 to each group's base rate over ``warmup_fraction`` of
    ``total_steps``, then cosine decay to ``final_lr`` (DG-Mix: 10 of 100 epochs, 0.8 → 0.002).
    ``total_steps`` is filled in from ``trainer.estimated_stepping_batches`` by ``ASDMethod``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1,
                 final_lr: float = 0.0, last_epoch: int = -1) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(round(warmup_fraction * total_steps))
        self.final_lr = final_lr
        bases = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        super().__init__(optimizer, [self._factor(base) for base in bases], last_epoch)

    def _factor(self, base: float):
        def factor(step: int) -> float:
            if step < self.warmup_steps:
                return step / self.warmup_steps
            progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
            lr = self.final_lr + (base - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
            return lr / base if base else 0.0
        return factor
