"""A memory plan: its components (GB per GPU and the phase that holds them), the launch it is for, and its two
renderings (the terminal table and Markdown for README sections)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.plan.assumptions import DEFAULT_TEXT_TOKENS


@dataclass
class Launch:
    """How the run is launched (not in the training config): run_8gpu.sh's defaults."""

    num_gpus: int = 8
    zero_stage: int = 2  # 0: no DeepSpeed (one process, or plain DDP)
    offload_optimizer: bool = False
    offload_param: bool = False
    gpu_memory_gb: float = 80.0
    text_tokens: int = DEFAULT_TEXT_TOKENS
    images_per_prompt: int = 1  # image VLM recipes; video recipes read frames; Qwen-Image t2i has none
    accelerate_config: str | None = None


@dataclass
class Item:
    name: str
    gb: float
    phase: str  # resident | train | generate | render
    note: str = ""


@dataclass
class Plan:
    items: list[Item]
    assumptions: list[str]
    launch: Launch
    params: dict[str, int]
    model: str
    changes: list[tuple[str, float]] = field(default_factory=list)

    PHASES = ("train", "step", "generate", "render")

    def phase_total(self, phase: str) -> float:
        return sum(i.gb for i in self.items if i.phase in ("resident", phase))

    def phase_totals(self) -> dict[str, float]:
        present = {i.phase for i in self.items}
        return {p: self.phase_total(p) for p in self.PHASES if p in present or p == "train"}

    @property
    def total_gb(self) -> float:
        return max(self.phase_totals().values())

    @property
    def peak_phase(self) -> str:
        totals = self.phase_totals()
        return max(totals, key=totals.get)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.launch.gpu_memory_gb

    def markdown(self) -> str:
        """The same plan as Markdown (component table, phase peaks, verdict, assumptions), for README sections."""
        launch = self.launch
        zero = f"DeepSpeed ZeRO-{launch.zero_stage}" if launch.zero_stage else "no DeepSpeed"
        lines = [
            f"Per GPU: {self.model}, {launch.num_gpus} GPU(s), {zero}, {launch.gpu_memory_gb:g} GB cards "
            "(GB = 2^30 bytes).",
            "",
            "| component | GB | when |",
            "|---|---:|---|",
        ]
        for item in self.items:
            note = f" ({item.note})" if item.note else ""
            lines.append(f"| {item.name}{note} | {item.gb:.2f} | {item.phase} |")
        for phase, gb in self.phase_totals().items():
            lines.append(f"| peak during {phase} | {gb:.2f} | |")
        verdict = "fits" if self.fits else "does not fit"
        lines.append(
            f"| **total (peak per GPU, during {self.peak_phase})** | **{self.total_gb:.1f}** | "
            f"**{verdict} in {launch.gpu_memory_gb:g} GB** |"
        )
        if self.changes:
            lines += ["", "Changes, cheapest first (new peak per GPU):", ""]
            lines += [f"- {label}: {gb:.1f} GB" for label, gb in self.changes]
        lines += ["", "Assumptions:", ""] + [f"- {a}" for a in self.assumptions]
        return "\n".join(lines)

    def format(self) -> str:
        launch = self.launch
        zero = f"DeepSpeed ZeRO-{launch.zero_stage}" if launch.zero_stage else "no DeepSpeed"
        lines = [
            f"Memory plan per GPU: {self.model}, {launch.num_gpus} GPU(s), {zero}, {launch.gpu_memory_gb:g} GB cards",
            "",
            f"{'component':<64} {'GB':>8}  when",
        ]
        for item in self.items:
            note = f"  ({item.note})" if item.note else ""
            lines.append(f"{item.name:<64} {item.gb:>8.2f}  {item.phase}{note}")
        lines.append("-" * 84)
        for phase, gb in self.phase_totals().items():
            lines.append(f"{'peak during ' + phase:<64} {gb:>8.2f}")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"{'total (peak per GPU, during ' + self.peak_phase + ')':<64} {self.total_gb:>8.2f}")
        headroom = launch.gpu_memory_gb - self.total_gb
        lines.append(
            f"verdict: {verdict} in {launch.gpu_memory_gb:g} GB per GPU "
            + (f"({headroom:.1f} GB to spare)" if self.fits else f"({-headroom:.1f} GB over)")
        )
        if self.changes:
            lines += ["", "changes, cheapest first (new peak per GPU):"]
            for label, gb in self.changes:
                mark = "fits" if gb <= launch.gpu_memory_gb else "still over"
                lines.append(f"  {label}: {gb:.1f} GB ({mark})")
        elif not self.fits:
            lines += ["", "no change this planner knows brings the peak under the budget"]
        lines += ["", "parameters: " + ", ".join(f"{k} {v:,}" for k, v in self.params.items())]
        lines += ["", "assumptions:"] + [f"  - {a}" for a in self.assumptions]
        return "\n".join(lines)
