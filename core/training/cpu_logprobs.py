"""GRPO's per-token log-probs on machines without a GPU, where TRL 1.15 has only a Triton kernel.

TRL 1.15 patches the policy's forward with a fused LM head (`trl.trainer.utils.add_fused_lm_head`) whose per-token
statistics come from `trl.kernels.ChunkedLogProbFunction`: Triton kernels that fold the vocabulary chunk by chunk. With
no CUDA/XPU device Triton has no driver and every training step fails; Triton's interpreter runs them but takes ~40 s
for 100 tokens over Qwen's 151k vocabulary. TRL 1.16 added a torch path for other devices; this module is that path for
1.15: the same statistics from the full logits of a token chunk with plain torch ops (autograd gives the gradients),
installed by `install()` as a dispatcher that hands CUDA/XPU tensors to TRL's own kernel unchanged.

Statistics (per token, logits z = transform(h W^T + b), transform(x) = softcap * tanh(x * scale / softcap) / T, or
x * scale / T without softcap; as `trl/kernels/chunked_logprob.py` computes them): `log_probs` = log softmax(z)[target];
`entropy` = -sum p log p; `log_sum_sq_probs` = log sum p^2; `mean_logits` = mean z; `is_top1` = the target is the
first arg-max. tests/test_cpu_logprobs.py checks values and gradients against TRL's kernel run in Triton's interpreter.
"""

from __future__ import annotations

from typing import Any

import torch

_TOKEN_CHUNK = 256  # tokens per full-logits block: 256 x 151,936 x 4 B = 156 MB at Qwen's vocabulary


def _logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    temperature: float,
    softcap: float | None,
    logit_scale: float,
) -> torch.Tensor:
    """[tokens, H] -> transformed float32 logits [tokens, V]."""
    z = hidden.float() @ weight.float().t()
    if bias is not None:
        z += bias.float()
    if logit_scale != 1.0:
        z *= logit_scale
    if softcap is not None:
        z = torch.tanh(z.div_(softcap)).mul_(softcap)
    if temperature != 1.0:
        z /= temperature
    return z


class _ChunkedStatistics(torch.autograd.Function):
    """Forward folds the vocabulary one token chunk at a time and keeps only per-token results; backward recomputes
    each chunk's logits (as TRL's kernel does), so no [tokens, vocab] tensor outlives its chunk. Gradients flow
    through `log_probs` and `entropy`, the two statistics the GRPO loss uses: with log p = z - lse,
    d log p[t] / dz = onehot(t) - p and d H / dz = -p (log p + H)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, softcap, logit_scale):  # noqa: ANN001
        n = hidden.shape[0]
        log_probs = hidden.new_empty(n, dtype=torch.float32)
        lse = torch.empty_like(log_probs)
        entropy = torch.empty_like(log_probs)
        log_sum_sq = torch.empty_like(log_probs)
        mean_logits = torch.empty_like(log_probs)
        is_top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
        for i in range(0, n, _TOKEN_CHUNK):
            rows = slice(i, i + _TOKEN_CHUNK)
            z = _logits(hidden[rows], weight, bias, temperature, softcap, logit_scale)
            top, top_index = z.max(-1)
            is_top1[rows] = top_index == targets[rows]  # first arg-max, as torch.argmax
            mean_logits[rows] = z.mean(-1)
            e = torch.exp(z - top.unsqueeze(-1))
            total = e.sum(-1)
            lse[rows] = top + total.log()
            log_probs[rows] = z.gather(-1, targets[rows].long().unsqueeze(-1)).squeeze(-1) - lse[rows]
            entropy[rows] = lse[rows] - torch.linalg.vecdot(e, z) / total
            log_sum_sq[rows] = torch.linalg.vecdot(e, e).log() - 2 * total.log()
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.set_materialize_grads(False)  # None, not zeros, for outputs the loss does not use
        ctx.transform = (temperature, softcap, logit_scale)
        ctx.mark_non_differentiable(log_sum_sq, mean_logits, is_top1)
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_unused):  # noqa: ANN001, ANN205
        hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
        temperature, softcap, logit_scale = ctx.transform
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        for i in range(0, hidden.shape[0], _TOKEN_CHUNK):
            rows = slice(i, i + _TOKEN_CHUNK)
            h = hidden[rows].float()
            z = _logits(hidden[rows], weight, bias, temperature, softcap, logit_scale)
            log_p = z - lse[rows].unsqueeze(-1)
            p = log_p.exp()
            if grad_entropy is not None:  # dH/dz = -p (log p + H)
                grad_z = log_p.add_(entropy[rows].unsqueeze(-1)).mul_(p).mul_(-grad_entropy[rows].unsqueeze(-1))
            else:
                grad_z = torch.zeros_like(z)
            if grad_log_probs is not None:  # d log p[t]/dz = onehot(t) - p
                g = grad_log_probs[rows].unsqueeze(-1)
                grad_z.sub_(p.mul_(g))
                grad_z.scatter_add_(-1, targets[rows].long().unsqueeze(-1), g)
            # z = c tanh(x s / c) / T  ->  dz/dx = (s / T)(1 - (z T / c)^2);  z = x s / T  ->  dz/dx = s / T
            if softcap is not None:
                grad_z.mul_(1 - (z * (temperature / softcap)).square_())
            grad_x = grad_z.mul_(logit_scale / temperature)
            grad_hidden[rows] = grad_x @ weight.float()
            grad_weight.addmm_(grad_x.t(), h)
            if grad_bias is not None:
                grad_bias.add_(grad_x.sum(0))
        return (
            grad_hidden.to(hidden.dtype),
            grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
            None,
        )


def chunked_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float,
    chunk_size: int,
    final_logit_softcapping: float | None = None,
    logit_scale: float = 1.0,
    outputs: tuple[str, ...] = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1"),
) -> tuple[torch.Tensor | None, ...]:
    """`ChunkedLogProbFunction.apply`'s contract in torch: hidden [N, H], weight [V, H], bias [V] or None, targets [N]
    -> (log_probs [N], entropy [N] | None, log_sum_sq_probs [N] | None, mean_logits [N] | None, is_top1 [N] | None),
    float32 (is_top1 bool). `chunk_size` (TRL's vocabulary chunk) is accepted and unused: whole rows are computed for
    `_TOKEN_CHUNK` tokens at a time."""
    del chunk_size
    names = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    results = _ChunkedStatistics.apply(hidden, weight, bias, targets, temperature, final_logit_softcapping, logit_scale)
    return tuple(r if name == "log_probs" or name in outputs else None for name, r in zip(names, results, strict=True))


class DeviceDispatch:
    """Stands in for `trl.trainer.utils._ChunkedLogProbFunction`: CUDA/XPU tensors go to TRL's kernel, others to
    `chunked_logprobs`."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def apply(self, hidden: torch.Tensor, *args: Any) -> tuple[torch.Tensor | None, ...]:
        if hidden.device.type in ("cuda", "xpu") and self.kernel is not None:
            return self.kernel.apply(hidden, *args)
        return chunked_logprobs(hidden, *args)


def install() -> None:
    """Route TRL's fused LM head through `DeviceDispatch` (idempotent). `_fused_forward` reads the module attribute at
    call time, so this works whenever it runs before the first training step."""
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if not isinstance(current, DeviceDispatch):
        trl_utils._ChunkedLogProbFunction = DeviceDispatch(current)
