"""The training loss of Nanda et al.'s 1-layer transformer at the last position, with a hand-written
backward for everything that is per training pair.

`last_position_loss(model, tokens, labels)` is the same function as
`cross_entropy(model(tokens)[:, -1], labels)` (values and gradients; tests/test_step.py checks both
against the plain full forward). It is faster because:

- with one layer and a constant '=' query, attention scores and values at positions 0 and 1 are
  (p, ...) lookup tables (see `Transformer.last_logits`); autograd handles those small tables;
- the per-pair part (attention mix, W_O, MLP, unembedding, float64 log-softmax, loss) is one
  `torch.autograd.Function` whose backward is written out: no autograd graph over (batch, d_mlp)
  tensors, biases fused into `addmm`, ReLU and its mask done in place, and the loss gradient
  (softmax - onehot) / batch taken from the float64 softmax in one pass.

The arithmetic is that of the paper's step (float64 log-softmax included); only the order of a few
floating-point sums differs from autograd's, so results agree to rounding, not bit for bit.
"""
from __future__ import annotations

import torch
from torch import Tensor


class _PerPairLoss(torch.autograd.Function):
    """Loss of the per-pair part of the last-position step, from the lookup tables on."""

    @staticmethod
    def forward(ctx, a, b, labels, S0, S1, s_eq, V0, V1, v_eq, x_eq, W_O, W_in, b_in, W_out, b_out, W_U,
                loss_dtype):
        n, h = a.shape[0], S0.shape[1]
        e = V0.shape[1] // h
        scores = torch.stack([S0[a], S1[b], s_eq.expand(n, h)], dim=-1)  # (n, h, 3)
        pattern = scores.softmax(dim=-1)
        va, vb = V0[a].view(n, h, e), V1[b].view(n, h, e)
        z = pattern[..., 0:1] * va
        z.addcmul_(pattern[..., 1:2], vb).add_(pattern[..., 2:3] * v_eq.view(h, e))
        z = z.view(n, h * e)
        x = torch.addmm(x_eq.expand(n, -1), z, W_O)  # (n, d)
        post = torch.addmm(b_in, x, W_in).relu_()  # (n, m); post > 0 is ReLU's mask
        r = torch.addmm(b_out, post, W_out).add_(x)  # residual after the MLP
        logits = r @ W_U  # (n, p)
        logits = logits.to(loss_dtype)
        logprobs = logits.log_softmax(dim=-1)
        probs = logits.softmax(dim=-1)  # ATen's exp: `logprobs.exp()` is MKL's, whose bits follow the CPU
        nll = -logprobs.gather(-1, labels.unsqueeze(-1))
        ctx.vocab = S0.shape[0]
        ctx.save_for_backward(a, b, labels, pattern, va, vb, v_eq, z, x, post, r, probs, W_O, W_in,
                              W_out, W_U)
        return nll.mean()

    @staticmethod
    def backward(ctx, grad):
        a, b, labels, pattern, va, vb, v_eq, z, x, post, r, probs, W_O, W_in, W_out, W_U = ctx.saved_tensors
        n, h, e = va.shape
        # d loss / d logits = (softmax - onehot) / n, in the loss dtype, then in the logits' dtype
        g = probs.clone()
        g.scatter_add_(-1, labels.unsqueeze(-1), g.new_full((n, 1), -1.0))
        g = g.mul_(grad / n).to(r.dtype)
        dW_U = r.T @ g
        dr = g @ W_U.T  # (n, d)
        dW_out, db_out = post.T @ dr, dr.sum(0)
        dpre = torch.ops.aten.threshold_backward(dr @ W_out.T, post, 0.0)  # (n, m): 0 where post <= 0
        dW_in, db_in = x.T @ dpre, dpre.sum(0)
        dx = dr.addmm_(dpre, W_in.T)  # (n, d): through the MLP and the residual
        dx_eq = dx.sum(0)
        dW_O = z.T @ dx
        dz = (dx @ W_O.T).view(n, h, e)
        dpat = torch.stack([(dz * va).sum(-1), (dz * vb).sum(-1), (dz * v_eq.view(h, e)).sum(-1)], dim=-1)
        dscores = pattern * (dpat - (pattern * dpat).sum(-1, keepdim=True))  # softmax backward
        vocab = ctx.vocab
        dS0 = dscores.new_zeros(vocab, h).index_add_(0, a, dscores[..., 0])
        dS1 = dscores.new_zeros(vocab, h).index_add_(0, b, dscores[..., 1])
        ds_eq = dscores[..., 2].sum(0)
        dV0 = dz.new_zeros(vocab, h * e).index_add_(0, a, (pattern[..., 0:1] * dz).view(n, h * e))
        dV1 = dz.new_zeros(vocab, h * e).index_add_(0, b, (pattern[..., 1:2] * dz).view(n, h * e))
        dv_eq = (pattern[..., 2:3] * dz).sum(0).view(h * e)
        return (None, None, None, dS0, dS1, ds_eq, dV0, dV1, dv_eq, dx_eq, dW_O, dW_in, db_in, dW_out,
                db_out, dW_U, None)


def last_position_loss(model, tokens: Tensor, labels: Tensor, loss_dtype: str = "float64") -> Tensor:
    """Return `cross_entropy(model(tokens)[:, -1], labels, loss_dtype)` for a 1-layer `Transformer`
    on `a b =` tokens with no hooks attached, computed by the fast path (same values and gradients).
    Any other case falls back to `cross_entropy(model.last_logits(tokens), ...)`, so hooks fire."""
    from scidl.train import cross_entropy  # train imports the registry, which imports this module

    if not _fast_path_applies(model, tokens):
        return cross_entropy(model.last_logits(tokens), labels, loss_dtype)
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    x_eq, _, k_q, W_V, tables = model.lookup_tables()  # the '=' residual and per-token tables
    return _PerPairLoss.apply(tokens[:, 0], tokens[:, 1], labels, tables[0] @ k_q, tables[1] @ k_q,
                              x_eq @ k_q, tables[0] @ W_V, tables[1] @ W_V, x_eq @ W_V, x_eq,
                              attn.W_O.flatten(0, 1), mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out, model.W_U,
                              getattr(torch, loss_dtype))


def _fast_path_applies(model, tokens: Tensor) -> bool:
    from scidl.phenomena.grokking.model import Transformer

    return (isinstance(model, Transformer) and len(model.blocks) == 1 and model.cfg.act == "relu"
            and tokens.dim() == 2 and tokens.shape[1] == model.n_ctx and not model.hooks_attached()
            and not bool((tokens[:, 2] != model.p).any()))
