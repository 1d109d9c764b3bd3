"""The one GRPO trainer every recipe uses: TRL's `GRPOTrainer` plus what a VLM run needs and TRL lacks.

Added here: a start-up report of what trains (counts per vision/projector/language group, so a wrong LoRA switch is
caught before hours of GPU time) and the reward-curve PNG written at the end of training. Everything else —
generation, the processor call on the `image` column, advantages, the loss — is TRL's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import GRPOTrainer

from core.lora import trainable_report
from core.plots import PLOT_NAME, plot_reward_curves

logger = logging.getLogger(__name__)


class RewardPlotCallback(TrainerCallback):
    """Writes `reward_curve.png` into the output folder when training ends (main process only)."""

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if not state.is_world_process_zero:
            return
        try:
            path = plot_reward_curves(state.log_history, Path(args.output_dir) / PLOT_NAME)
            logger.info("reward curve written to %s", path)
        except ValueError as err:  # no reward logged (e.g. zero steps): a missing plot must not fail the run
            logger.warning("no reward curve: %s", err)


class VLMGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(RewardPlotCallback())
        self.trainable_summary = trainable_report(self.model)
        if self.accelerator.is_main_process:
            print(self.trainable_summary, flush=True)
