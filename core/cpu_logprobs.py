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


def _statistics(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float,
    softcap: float | None,
    logit_scale: float,
    outputs: tuple[str, ...],
) -> tuple[torch.Tensor | None, ...]:
    z = hidden.float() @ weight.float().t()
    if bias is not None:
        z = z + bias.float()
    z = z * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    log_p = torch.log_softmax(z, dim=-1)
    log_probs = log_p.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
    with torch.no_grad():
        log_sum_sq = torch.logsumexp(2 * log_p, dim=-1) if "log_sum_sq_probs" in outputs else None
        mean_logits = z.mean(-1) if "mean_logits" in outputs else None
        is_top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
    return log_probs, entropy, log_sum_sq, mean_logits, is_top1


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
    parts = [
        _statistics(
            hidden[i : i + _TOKEN_CHUNK],
            weight,
            bias,
            targets[i : i + _TOKEN_CHUNK],
            temperature,
            final_logit_softcapping,
            logit_scale,
            outputs,
        )
        for i in range(0, hidden.shape[0], _TOKEN_CHUNK)
    ]
    if not parts:  # no valid position: empty outputs still connected to the graph, as TRL's masked_scatter expects
        parts = [_statistics(hidden, weight, bias, targets, temperature, final_logit_softcapping, logit_scale, outputs)]
    return tuple(None if part[0] is None else torch.cat(list(part)) for part in zip(*parts, strict=True))


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
