"""Nanda et al.'s 1-layer transformer and a one-hot MLP, both with TransformerLens hook points."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from scidl.config import ModelConfig, TaskConfig
from scidl.errors import ScidlError, describe

ACTS = {"relu": F.relu, "gelu": F.gelu, "quadratic": torch.square}


def _randn(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class Attention(nn.Module):
    """Causal multi-head attention without biases (Nanda et al.)."""

    def __init__(self, cfg: ModelConfig, n_ctx: int) -> None:
        super().__init__()
        h, d, dh, s = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.init_scale / math.sqrt(cfg.d_model)
        self.W_Q, self.W_K, self.W_V = (_randn(h, d, dh, std=s) for _ in range(3))
        self.W_O = _randn(h, dh, d, std=s)
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        for name in ("q", "k", "v", "attn_scores", "pattern", "z"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        q = self.hook_q(einsum(x, self.W_Q, "b p d, h d e -> b p h e"))
        k = self.hook_k(einsum(x, self.W_K, "b p d, h d e -> b p h e"))
        v = self.hook_v(einsum(x, self.W_V, "b p d, h d e -> b p h e"))
        scores = einsum(q, k, "b q h e, b k h e -> b h q k") / math.sqrt(q.shape[-1])
        n = x.shape[1]
        scores = self.hook_attn_scores(scores.masked_fill(~self.mask[:n, :n], float("-inf")))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # (batch, head, query, key)
        z = self.hook_z(einsum(pattern, v, "b h q k, b k h e -> b q h e"))
        return einsum(z, self.W_O, "b q h e, h e d -> b q d")


class MLPBlock(nn.Module):
    """d_model -> d_mlp -> d_model with biases and a pointwise activation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = cfg.init_scale / math.sqrt(cfg.d_model)
        self.W_in, self.W_out = _randn(cfg.d_model, cfg.d_mlp, std=s), _randn(cfg.d_mlp, cfg.d_model, std=s)
        self.b_in, self.b_out = nn.Parameter(torch.zeros(cfg.d_mlp)), nn.Parameter(torch.zeros(cfg.d_model))
        self.act = ACTS[cfg.act]
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        pre = torch.addmm(self.b_in, x, self.W_in) if x.dim() == 2 else x @ self.W_in + self.b_in
        post = self.hook_post(self.act(self.hook_pre(pre)))
        return torch.addmm(self.b_out, post, self.W_out) if post.dim() == 2 else post @ self.W_out + self.b_out


class Block(nn.Module):
    """Attention then MLP, each added to the residual stream; no LayerNorm."""

    def __init__(self, cfg: ModelConfig, n_ctx: int) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(cfg, n_ctx), MLPBlock(cfg)
        for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(x)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(x)))


class HookError(ScidlError):
    """A hook name that the model does not have; the message lists the ones it has."""


def check_hook_names(model: HookedRootModule, names) -> None:
    """Raise HookError unless every name in `names` (a str or an iterable of str) is a hook of `model`."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise HookError(f"hook name(s) {unknown} are not allowed: {type(model).__name__} has "
                        f"{sorted(model.hook_dict)}")


class HookedModel(HookedRootModule):
    """HookedRootModule whose hook names are checked and whose run_with_cache returns a
    TransformerLens ActivationCache (so `cache["post", 0]` works)."""

    def check_hook_names(self, names) -> None:
        """Raise HookError unless every name in `names` (a str or an iterable of str) is a hook."""
        check_hook_names(self, names)

    def check_tokens(self, tokens) -> None:
        """Raise HookError unless `tokens` is an integer (batch, pos) tensor of this model's tokens."""
        vocab = self.p + 1  # 0..p-1 operands, p is '='
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2 \
                or tokens.numel() == 0 or int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
            raise HookError(f"tokens={describe(tokens)} is not allowed: must be a non-empty integer (batch, pos) tensor "
                            f"with values in [0, {self.p}] ({self.p} is '=')")

    def run_with_cache(self, *args, names_filter=None, **kwargs) -> tuple[Tensor, ActivationCache]:
        if args:
            self.check_tokens(args[0])
        if names_filter is not None and not callable(names_filter):
            if not isinstance(names_filter, str) and not (hasattr(names_filter, "__iter__")
                                                          and all(isinstance(n, str) for n in names_filter)):
                raise HookError(f"names_filter={names_filter!r} is not allowed: must be a hook name, a list "
                                f"of hook names or a function name -> bool")
            self.check_hook_names(names_filter)
        out, cache = super().run_with_cache(*args, names_filter=names_filter, **kwargs)
        return out, ActivationCache(cache, self)

    def run_with_hooks(self, *args, fwd_hooks=(), bwd_hooks=(), **kwargs):
        if args:
            self.check_tokens(args[0])
        for name, hooks in (("fwd_hooks", fwd_hooks), ("bwd_hooks", bwd_hooks)):
            hooks = list(hooks)
            if not all(isinstance(h, (tuple, list)) and len(h) == 2 and callable(h[1])
                       and (isinstance(h[0], str) or callable(h[0])) for h in hooks):
                raise HookError(f"{name}={hooks!r} is not allowed: must be a list of (hook name, "
                                f"fn(activation, hook)) pairs")
        self.check_hook_names([n for n, _ in [*fwd_hooks, *bwd_hooks] if isinstance(n, str)])
        return super().run_with_hooks(*args, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)

    def hooks_attached(self) -> bool:
        """Return whether any hook point currently has a forward or backward hook."""
        return any(h._forward_hooks or h._backward_hooks for h in self.hook_dict.values())


class Transformer(HookedModel):
    """Tokens `a b =` -> logits over p answers at every position (Nanda et al. 2023)."""

    n_ctx = 3

    def __init__(self, cfg: ModelConfig, p: int) -> None:
        super().__init__()
        self.cfg, self.p = cfg, p
        s = cfg.init_scale / math.sqrt(cfg.d_model)
        self.W_E = _randn(p + 1, cfg.d_model, std=s)  # token p is '='
        self.W_pos = _randn(self.n_ctx, cfg.d_model, std=s)
        self.W_U = _randn(cfg.d_model, p, std=cfg.init_scale / math.sqrt(p))
        self.blocks = nn.ModuleList(Block(cfg, self.n_ctx) for _ in range(cfg.n_layers))
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.setup()

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos p"]:
        n = tokens.shape[1]
        x = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[:n])
        for block in self.blocks:
            x = block(x)
        return x @ self.W_U

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

    def __init__(self, cfg: ModelConfig, p: int) -> None:
        super().__init__()
        self.cfg, self.p = cfg, p
        # W_in rows 0..p-1 embed a, rows p..2p-1 embed b; an embedding bag sums them (threads well).
        self.W_in = _randn(2 * p, cfg.d_mlp, std=cfg.init_scale / math.sqrt(2))
        self.W_out = _randn(cfg.d_mlp, p, std=cfg.init_scale / math.sqrt(cfg.d_mlp))
        self.act = ACTS[cfg.act]
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()
        self.setup()

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch p"]:
        idx = torch.stack([tokens[:, 0], tokens[:, 1] + self.p], dim=1)  # (batch, 2)
        pre = self.hook_pre(F.embedding_bag(idx, self.W_in, mode="sum"))
        return self.hook_post(self.act(pre)) @ self.W_out

    def last_logits(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch p"]:
        """Return the logits (the MLP has a single output position)."""
        return self(tokens)


# Hook whose activations are "the neurons" of each architecture.
NEURON_HOOK = {"transformer": "blocks.0.mlp.hook_post", "mlp": "hook_post"}


def make_model(model: ModelConfig, task: TaskConfig, seed: int = 0) -> Transformer | MLP:
    """Return a freshly initialised model for `task`, seeded by `seed`."""
    torch.manual_seed(seed)
    cls = Transformer if model.arch == "transformer" else MLP
    return cls(model, task.p)


def embedding_matrix(model: Transformer | MLP) -> Float[Tensor, "p d"]:
    """Return the per-operand-value input embedding: W_E[:p] (transformer) or W_in[:p] (MLP, a)."""
    return model.W_E[: model.p] if isinstance(model, Transformer) else model.W_in[: model.p]
