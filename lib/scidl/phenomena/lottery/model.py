"""The lottery-ticket models, with TransformerLens hook points.

arch "mlp" (`LotteryMLP`): a fully connected net, LeNet-300-100's shape by default (n_inputs -> hidden
-> 10); its layers `fc0`, `fc1`, ... are `nn.Linear`, the last the output layer.

arch "cnn" (`LotteryCNN`): the 1-D CNN of MNIST-1D's reference results (Greydanus & Kobak 2020, the
mnist1d repository's `ConvBase`): conv layers `conv0`, `conv1`, ... (`nn.Conv1d`, kernel 5 then 3,
stride 2, padding 1; `hidden` gives their channels, default (25, 25, 25)), flattened into the
output layer `out` (`nn.Linear`; 25 x 5 = 125 features for MNIST-1D's 40 points).

Every weight (`{name}.weight`: 2-D linear, 3-D (out, in, kernel) conv) is prunable by scidl.masks;
the output layer is the last of them. The MLP's 2-D weights are what weightwatcher reads
(scidl.yardsticks.weights_baseline); it would take a conv weight's 3-D shape for attention heads.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from scidl.config import ConfigError, ModelConfig
from scidl.models import ACTS
from scidl.phenomena.lottery.task import N_CLASSES, LotteryTask

DEFAULT_HIDDEN = (300, 100)
DEFAULT_CHANNELS = (25, 25, 25)  # mnist1d's ConvBase
CONV_STRIDE, CONV_PADDING = 2, 1


def conv_kernel(i: int) -> int:
    """Return the kernel size of conv layer `i`: 5 for the first, 3 after it (ConvBase's)."""
    return 5 if i == 0 else 3


def conv_lengths(n_inputs: int, n_layers: int) -> tuple[int, ...]:
    """Return the signal length after each of `n_layers` conv layers on `n_inputs` points; ConfigError
    (naming ModelConfig.hidden) if one would be empty."""
    lengths, length = [], n_inputs
    for i in range(n_layers):
        length = (length + 2 * CONV_PADDING - conv_kernel(i)) // CONV_STRIDE + 1
        if length <= 0:
            raise ConfigError(f"ModelConfig.hidden with {n_layers} conv layers is not allowed for arch='cnn' on "
                              f"{n_inputs} input points: conv layer {i} (kernel {conv_kernel(i)}, stride "
                              f"{CONV_STRIDE}, padding {CONV_PADDING}) leaves no output; the input needs at "
                              f"least {conv_kernel(0) - 2 * CONV_PADDING} points")
        lengths.append(length)
    return tuple(lengths)


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


class LotteryCNN(HookedRootModule):
    """x (batch, n_inputs) -> logits (batch, 10) through conv layers `conv{i}` (channels `hidden`, default
    (25, 25, 25)), flattened into the linear output layer `out`. Hooks: `hook_pre{i}` and `hook_post{i}`
    around each conv layer's activation, (batch, channels, length); `hook_logits` on the output."""

    output_weight = "out.weight"  # what scidl.masks prunes at the output layer's rate

    def __init__(self, cfg: ModelConfig, n_inputs: int) -> None:
        super().__init__()
        channels = [1, *(cfg.hidden or DEFAULT_CHANNELS)]
        self.n_hidden = len(channels) - 1
        self.lengths = conv_lengths(n_inputs, self.n_hidden)
        for i, (a, b) in enumerate(zip(channels, channels[1:])):
            setattr(self, f"conv{i}", nn.Conv1d(a, b, conv_kernel(i), stride=CONV_STRIDE, padding=CONV_PADDING))
            setattr(self, f"hook_pre{i}", HookPoint())
            setattr(self, f"hook_post{i}", HookPoint())
        self.n_flat = channels[-1] * self.lengths[-1]
        self.out = nn.Linear(self.n_flat, N_CLASSES)
        self.hook_logits = HookPoint()
        self.act = ACTS[cfg.act]
        self.channels = tuple(channels)
        self.setup()

    def forward(self, x: Tensor) -> Tensor:
        x = x.unsqueeze(1)  # (batch, 1 channel, n_inputs)
        for i in range(self.n_hidden):
            x = getattr(self, f"hook_post{i}")(self.act(getattr(self, f"hook_pre{i}")(getattr(self, f"conv{i}")(x))))
        return self.hook_logits(self.out(x.flatten(1)))


def make_model(model: ModelConfig, task: LotteryTask, seed: int = 0) -> LotteryMLP | LotteryCNN:
    """Return a freshly initialised net of `model.arch` ("mlp" or "cnn") for `task` (PyTorch's default
    Linear and Conv1d init), seeded by `seed`."""
    torch.manual_seed(seed)
    cls = LotteryCNN if model.arch == "cnn" else LotteryMLP
    return cls(model, task.n_inputs)
