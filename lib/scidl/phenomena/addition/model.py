"""Addition's model: a small hooked transformer (attention + MLP blocks, no LayerNorm) reading
`a + b = c_n .. c_1` and predicting the answer digits at the last n_digits + 1 positions."""
from __future__ import annotations

import torch

from scidl.config import ModelConfig
from scidl.models import Transformer
from scidl.phenomena.addition.task import D_VOCAB, AdditionTask


class AdditionTransformer(Transformer):
    """Tokens (batch, 3 n_digits + 2) -> logits over the 10 digits at every position; the answer
    logits are those of the last n_digits + 1 positions, carry-out digit first."""

    token_note = " (10 is '+', 11 is '=')"

    def __init__(self, cfg: ModelConfig, n_digits: int) -> None:
        super().__init__(cfg, d_vocab=D_VOCAB, d_vocab_out=10, n_ctx=3 * n_digits + 2, n_answers=n_digits + 1)
        self.n_digits = n_digits

    def answer_position(self, digit: int) -> int:
        """Return the position whose logits predict answer digit `digit` (0: units, n_digits: carry-out)."""
        return self.n_ctx - 1 - digit

    def operand_positions(self, digit: int) -> tuple[int, int]:
        """Return the positions of a's and b's digit `digit` (0: units)."""
        n = self.n_digits
        return n - 1 - digit, 2 * n - digit


def make_model(model: ModelConfig, task: AdditionTask, seed: int = 0) -> AdditionTransformer:
    """Return a freshly initialised model for `task`, seeded by `seed`."""
    torch.manual_seed(seed)
    return AdditionTransformer(model, task.n_digits)
