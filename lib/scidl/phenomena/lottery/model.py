"""The lottery-ticket model: a fully connected net (LeNet-300-100's shape by default: n_inputs ->
hidden -> 10) with TransformerLens hook points, its layers `fc0`, `fc1`, ... as `nn.Linear` (so
`{name}.weight` are the 2-D weights weightwatcher and scidl.masks read; the last is the output layer)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from scidl.config import ModelConfig
from scidl.models import ACTS
from scidl.phenomena.lottery.task import N_CLASSES, LotteryTask

DEFAULT_HIDDEN = (300, 100)


class LotteryMLP(HookedRootModule):
    """x (batch, n_inputs) -> logits (batch, 10). Hooks: `hook_pre{i}` and `hook_post{i}` around each
    hidden layer's activation, `hook_logits` on the output."""

    def __init__(self, cfg: ModelConfig, n_inputs: int) -> None:
        super().__init__()
        widths = [n_inputs, *(cfg.hidden or DEFAULT_HIDDEN), N_CLASSES]
        self.n_hidden = len(widths) - 2
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            setattr(self, f"fc{i}", nn.Linear(a, b))
        for i in range(self.n_hidden):
            setattr(self, f"hook_pre{i}", HookPoint())
            setattr(self, f"hook_post{i}", HookPoint())
        self.hook_logits = HookPoint()
        self.act = ACTS[cfg.act]
        self.widths = tuple(widths)
        self.setup()

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.n_hidden):
            x = getattr(self, f"hook_post{i}")(self.act(getattr(self, f"hook_pre{i}")(getattr(self, f"fc{i}")(x))))
        return self.hook_logits(getattr(self, f"fc{self.n_hidden}")(x))


def make_model(model: ModelConfig, task: LotteryTask, seed: int = 0) -> LotteryMLP:
    """Return a freshly initialised net for `task` (PyTorch's default Linear init), seeded by `seed`."""
    torch.manual_seed(seed)
    return LotteryMLP(model, task.n_inputs)
