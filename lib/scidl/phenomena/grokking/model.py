"""Grokking's models: Nanda et al.'s 1-layer transformer on `a b =` and a one-hot MLP (Gromov-style),
both with TransformerLens hook points."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from scidl.config import ModelConfig
from scidl.models import ACTS, HookedModel, Transformer as HookedTransformer, randn_param
from scidl.phenomena.grokking.task import ModularTask
from transformer_lens.hook_points import HookPoint


class Transformer(HookedTransformer):
    """Tokens `a b =` -> logits over p answers at every position (Nanda et al. 2023); token p is '='."""

    n_ctx = 3

    def __init__(self, cfg: ModelConfig, p: int) -> None:
        super().__init__(cfg, d_vocab=p + 1, d_vocab_out=p, n_ctx=self.n_ctx)
        self.p = p

    @property
    def token_note(self) -> str:
        return f" ({self.p} is '=')"

    def lookup_tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        """Return what the last-position rewrite needs (one layer, '=' last): the '=' residual x_eq
        (d_model,), its query q (head, d_head), k_q (d_model, head) such that attention scores are
        resid @ k_q, W_V flattened to (d_model, head*d_head), and the residuals of operand tokens at
        positions 0 and 1, [(p, d_model)] * 2."""
        attn = self.blocks[0].attn
        x_eq = self.W_E[self.p] + self.W_pos[2]  # (d_model,) the '=' residual, same for all rows
        q = einsum(x_eq, attn.W_Q, "d, h d e -> h e") / math.sqrt(attn.W_Q.shape[-1])
        k_q = einsum(attn.W_K, q, "h d e, h e -> d h")  # scores are resid @ k_q
        W_V = einsum(attn.W_V, "h d e -> d h e").flatten(1)  # (d_model, head*d_head)
        tables = [self.W_E[: self.p] + self.W_pos[j] for j in range(2)]  # (p, d_model)
        return x_eq, q, k_q, W_V, tables

    def last_logits(self, tokens: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch p"]:
        """Return logits at the last position only, exactly as forward(tokens)[:, -1] but faster.

        With one layer and a constant '=' query, every attention score and every value at
        position j depends on token j alone, so they are (vocab, ...) lookup tables. Hook points
        on that path would see other shapes, so whenever a hook is attached (model.hooks(...),
        run_with_hooks, run_with_cache) this runs the full forward instead: hooks always fire.
        """
        if len(self.blocks) != 1 or tokens.shape[1] != self.n_ctx or bool((tokens[:, 2] != self.p).any()) \
                or self.hooks_attached():
            return self(tokens)[:, -1]  # the tables assume one layer, '=' last and no hooks
        attn, mlp = self.blocks[0].attn, self.blocks[0].mlp
        x_eq, q, k_q, W_V, tables = self.lookup_tables()
        score = [F.embedding(tokens[:, j], t @ k_q) for j, t in enumerate(tables)]  # (batch, head)
        value = [F.embedding(tokens[:, j], t @ W_V) for j, t in enumerate(tables)]  # (batch, h*e)
        scores = torch.stack(score + [(x_eq @ k_q).expand_as(score[0])], dim=-1)  # (batch, head, 3)
        pattern = scores.softmax(dim=-1).unsqueeze(-1)  # (batch, head, 3, 1), broadcast over d_head
        h, e = q.shape
        z = (pattern[:, :, 0] * value[0].view(-1, h, e) + pattern[:, :, 1] * value[1].view(-1, h, e)
             + pattern[:, :, 2] * (x_eq @ W_V).view(h, e))  # (batch, head, d_head)
        x = x_eq + z.flatten(1) @ attn.W_O.flatten(0, 1)  # (batch, d_model)
        return (x + mlp(x)) @ self.W_U


class MLP(HookedModel):
    """One-hot(a) ++ one-hot(b) -> d_mlp hidden units -> p logits (Gromov-style)."""

    n_ctx = 3  # it reads rows `a b =` like the transformer, and ignores '='

    def __init__(self, cfg: ModelConfig, p: int) -> None:
        super().__init__()
        self.cfg, self.p, self.d_vocab, self.d_vocab_out = cfg, p, p + 1, p
        # W_in rows 0..p-1 embed a, rows p..2p-1 embed b; an embedding bag sums them (threads well).
        self.W_in = randn_param(2 * p, cfg.d_mlp, std=cfg.init_scale / math.sqrt(2))
        self.W_out = randn_param(cfg.d_mlp, p, std=cfg.init_scale / math.sqrt(cfg.d_mlp))
        self.act = ACTS[cfg.act]
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()
        self.setup()

    token_note = Transformer.token_note

    def onehot_rows(self, tokens: Int[Tensor, "... pos"]) -> Int[Tensor, "... 2"]:
        """Return the rows of W_in that each pair sums: a, and b + p (what scidl.ensemble stacks)."""
        return torch.stack([tokens[..., 0], tokens[..., 1] + self.p], dim=-1)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch p"]:
        idx = self.onehot_rows(tokens)  # (batch, 2)
        pre = self.hook_pre(F.embedding_bag(idx, self.W_in, mode="sum"))
        return self.hook_post(self.act(pre)) @ self.W_out

    def last_logits(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch p"]:
        """Return the logits (the MLP has a single output position)."""
        return self(tokens)


# Hook whose activations are "the neurons" of each architecture.
NEURON_HOOK = {"transformer": "blocks.0.mlp.hook_post", "mlp": "hook_post"}


def make_model(model: ModelConfig, task: ModularTask, seed: int = 0) -> Transformer | MLP:
    """Return a freshly initialised model for `task`, seeded by `seed`."""
    torch.manual_seed(seed)
    cls = Transformer if model.arch == "transformer" else MLP
    return cls(model, task.p)


def embedding_matrix(model: Transformer | MLP) -> Float[Tensor, "p d"]:
    """Return the per-operand-value input embedding: W_E[:p] (transformer) or W_in[:p] (MLP, a)."""
    return model.W_E[: model.p] if isinstance(model, Transformer) else model.W_in[: model.p]
