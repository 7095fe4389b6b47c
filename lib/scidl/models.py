"""Shared model parts with TransformerLens hook points: attention, MLP and blocks without LayerNorm, a
hooked transformer over any token vocabulary, and hook-name and token checks. Each phenomenon builds
its models from these (scidl/phenomena/<name>/model.py)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from scidl.config import ModelConfig
from scidl.errors import ScidlError, describe

ACTS = {"relu": F.relu, "gelu": F.gelu, "quadratic": torch.square}


def randn_param(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class Attention(nn.Module):
    """Causal multi-head attention without biases (Nanda et al.)."""

    def __init__(self, cfg: ModelConfig, n_ctx: int) -> None:
        super().__init__()
        h, d, dh, s = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.init_scale / math.sqrt(cfg.d_model)
        self.W_Q, self.W_K, self.W_V = (randn_param(h, d, dh, std=s) for _ in range(3))
        self.W_O = randn_param(h, dh, d, std=s)
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
        self.W_in, self.W_out = randn_param(cfg.d_model, cfg.d_mlp, std=s), randn_param(cfg.d_mlp, cfg.d_model, std=s)
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
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2 \
                or tokens.numel() == 0 or int(tokens.min()) < 0 or int(tokens.max()) >= self.d_vocab:
            raise HookError(f"tokens={describe(tokens)} is not allowed: must be a non-empty integer (batch, pos) tensor "
                            f"with values in [0, {self.d_vocab - 1}]{self.token_note}")

    token_note = ""  # what a reader should know about the vocabulary, for error messages

    def answer_logits(self, logits: Tensor) -> Tensor:
        """Return the logits of the answer(s) from a forward's output (all of it, by default)."""
        return logits

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
    """Tokens (batch, pos) -> logits over d_vocab_out answers at every position: embeddings, n_layers
    blocks of attention then MLP (no LayerNorm), unembedding. The answer is read at the last
    `n_answers` positions (Nanda et al. 2023's architecture, for any vocabulary and length)."""

    output_weight = "W_U"  # the output layer, for pruning (scidl.masks)

    def __init__(self, cfg: ModelConfig, d_vocab: int, d_vocab_out: int, n_ctx: int, n_answers: int = 1) -> None:
        super().__init__()
        self.cfg, self.d_vocab, self.d_vocab_out, self.n_ctx, self.n_answers = cfg, d_vocab, d_vocab_out, n_ctx, n_answers
        s = cfg.init_scale / math.sqrt(cfg.d_model)
        self.W_E = randn_param(d_vocab, cfg.d_model, std=s)
        self.W_pos = randn_param(n_ctx, cfg.d_model, std=s)
        self.W_U = randn_param(cfg.d_model, d_vocab_out, std=cfg.init_scale / math.sqrt(d_vocab_out))
        self.blocks = nn.ModuleList(Block(cfg, n_ctx) for _ in range(cfg.n_layers))
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.setup()

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        n = tokens.shape[1]
        x = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[:n])
        for block in self.blocks:
            x = block(x)
        return x @ self.W_U

    def answer_logits(self, logits: Float[Tensor, "batch pos d_vocab_out"]) -> Tensor:
        """Return the answer logits: (batch, d_vocab_out) for one answer, else (batch, n_answers, d_vocab_out)."""
        return logits[:, -1] if self.n_answers == 1 else logits[:, -self.n_answers:]
