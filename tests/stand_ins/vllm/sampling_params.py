"""Stand-in for `vllm.sampling_params` (see the package docstring)."""

from dataclasses import dataclass


@dataclass
class StructuredOutputsParams:
    regex: str | None = None
