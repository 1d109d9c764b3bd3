"""core.training.cpu_logprobs gives TRL 1.15's fused-LM-head statistics and gradients on CPU.

The reference is TRL's own Triton kernel (`trl.kernels.ChunkedLogProbFunction`) run in Triton's interpreter
(TRITON_INTERPRET=1 must be set before Triton is imported, hence a subprocess). Both sides get the same random inputs,
with and without softcapping, a temperature and a logit scale, over a vocabulary spanning several of TRL's chunks.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.training.cpu_logprobs import DeviceDispatch, chunked_logprobs, install
from tests.helpers import REPO_ROOT, subprocess_env

OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
CASES = [  # (temperature, softcap, logit_scale)
    (1.0, None, 1.0),
    (0.7, 30.0, 1.0),
    (1.3, None, 0.5),
]
SCRIPT = r"""
import json, sys, torch
from trl.kernels import ChunkedLogProbFunction
case = json.loads(sys.argv[1])
torch.manual_seed(0)
h = torch.randn(37, 16, requires_grad=True); w = torch.randn(2500, 16, requires_grad=True)
b = torch.randn(2500, requires_grad=True); t = torch.randint(0, 2500, (37,))
out = ChunkedLogProbFunction.apply(h, w, b, t, case[0], 1024, case[1], case[2], tuple(case[3]))
(out[0].sum() + 0.5 * out[1].sum()).backward()
print(json.dumps({"out": [o.float().tolist() for o in out], "grads": [x.grad.tolist() for x in (h, w, b)]}))
"""


def ours(temperature: float, softcap: float | None, scale: float):
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(2500, 16, requires_grad=True)
    b = torch.randn(2500, requires_grad=True)
    t = torch.randint(0, 2500, (37,))
    out = chunked_logprobs(h, w, b, t, temperature, 1024, softcap, scale, OUTPUTS)
    (out[0].sum() + 0.5 * out[1].sum()).backward()
    return out, (h.grad, w.grad, b.grad)


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_equal_trls_kernel(case) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([*case, OUTPUTS])],
        cwd=REPO_ROOT,
        env=subprocess_env(TRITON_INTERPRET="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = json.loads(proc.stdout.strip().splitlines()[-1])
    out, grads = ours(*case)
    for mine, theirs in zip(out, reference["out"], strict=True):
        torch.testing.assert_close(mine.float(), torch.tensor(theirs), rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(grads, reference["grads"], strict=True):
        torch.testing.assert_close(mine, torch.tensor(theirs), rtol=1e-4, atol=1e-5)


def test_cpu_tensors_take_the_torch_path_and_gpu_tensors_the_kernel() -> None:
    calls = []

    class Kernel:
        @staticmethod
        def apply(*args):
            calls.append(args[0].device.type)
            return ("kernel",)

    dispatch = DeviceDispatch(Kernel)
    h, w, t = torch.randn(3, 4), torch.randn(10, 4), torch.tensor([1, 2, 3])
    out = dispatch.apply(h, w, None, t, 1.0, 8, None, 1.0, ())
    assert calls == [] and out[0].shape == (3,) and all(o is None for o in out[1:])


def test_install_is_idempotent_and_keeps_trls_kernel_for_gpus() -> None:
    import trl.trainer.utils as trl_utils

    install()
    install()
    assert isinstance(trl_utils._ChunkedLogProbFunction, DeviceDispatch)
    assert not isinstance(trl_utils._ChunkedLogProbFunction.kernel, DeviceDispatch)
    assert trl_utils._ChunkedLogProbFunction.kernel.__name__ == "ChunkedLogProbFunction"
