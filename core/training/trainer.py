"""The one GRPO trainer every recipe uses: TRL's `GRPOTrainer` plus what a VLM run needs and TRL 1.15 lacks.

Added here:
- **Video.** TRL 1.15 handles `image`/`images` columns only. With a video in the prompt its generation step can see
  the video, but the log-probability forwards (old policy, reference, current policy) get no `pixel_values_videos`,
  `video_grid_thw`, `second_per_grid_ts` or `mm_token_type_ids`, so the log-probs are silently those of a model that
  never saw the clip. Here a `video` column (a list of frames per row, sampled by the recipe) is encoded once per
  generation batch; the same tensors drive generation and travel per sample, as lists, through TRL's shuffling,
  micro-batch splitting and gradient accumulation into every log-prob forward. The video placeholder token is kept
  out of sampling, as TRL does for the image token.
- **vLLM generation** (`use_vllm`), through `core.training.vllm_generation.PolicyVLLMGeneration` in place of TRL's
  `VLLMGeneration`: prompt images brought to the trainer processor's size first (same pixels, same image-token
  count on both sides), the trainer's pixel bounds given to the engine, a text-encoder policy served from a folder
  assembled with its tokenizer and processor, the placeholder tokens biased out of vLLM's sampling too.
- **Vision work once per unique input** (`core.training.vision_reuse`, `reuse_vision`): the G copies of a prompt's
  image or clip are processed once and, while the vision tower is frozen, encoded once per generation batch for
  generation and every log-prob forward; TRL's path computes the same tensors G to 4G times.
- A torch path for the per-token log-probs on CPU (`core.training.cpu_logprobs`), where TRL 1.15 only has a Triton
kernel.
- Run guards: training stops with `UnscoredRewardsError` after `max_unscored_steps` generation batches in a row in
  which no completion could be scored, and checkpoints inside a generation batch are refused (see core.training.run).
- A start-up report of what trains (counts per vision/projector/language group), so a wrong LoRA switch is caught
  before hours of GPU time, and the reward-curve PNG written at the end of training.
Everything else — generation, the image path's inputs, advantages, the loss — is TRL's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import GRPOTrainer

from core.tools.plots import PLOT_NAME, plot_reward_curves
from core.training import cpu_logprobs
from core.training.lora import trainable_report
from core.training.prompts import VIDEO_COLUMN, encode_prompts, encode_video_rows
from core.training.run import boundary_unit, check_save_steps
from core.training.vision_reuse import VisionReuse
from core.training.vllm_generation import fit_images_to_processor

logger = logging.getLogger(__name__)

VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")  # per-sample lists in TRL's batches

cpu_logprobs.install()  # TRL 1.15's log-prob kernel is Triton-only: a torch path for CPU runs (see that module)


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


class GenerationBoundaryCallback(TrainerCallback):
    """Refuses, before the first step, checkpoints that fall inside a generation batch once Trainer has resolved
    `save_steps` (a fraction of all steps) and `max_steps` (from epochs); absolute values are checked at start-up by
    `core.training.run.setup_run`."""

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        check_save_steps(args, state.save_steps, state.max_steps)
        if state.global_step % boundary_unit(args):  # resumed (by any path) from a checkpoint inside a batch
            raise ValueError(
                f"resuming at step {state.global_step}, inside a generation batch (boundaries are multiples of "
                f"{boundary_unit(args)} steps): the run would diverge from the one that wrote the checkpoint; resume "
                "from a checkpoint on a boundary"
            )


class UnscoredRewardsError(RuntimeError):
    """Training stopped: no completion could be scored for `max_unscored_steps` generation batches in a row."""


class UnscoredStepGuard:
    """Counts consecutive generation batches in which every reward returned None for every completion.

    TRL turns None into NaN and gives an unscored completion zero advantage, so such steps train nothing while the
    loss, gradient norm and logs look calm; a run whose judge is down would "succeed" with unchanged weights.
    """

    def __init__(self, reward_names: list[str], max_unscored_steps: int) -> None:
        self.reward_names = reward_names
        self.max_unscored_steps = max_unscored_steps
        self.consecutive = 0
        self.consecutive_per_reward = [0] * len(reward_names)  # one reward None everywhere while others score
        self.warned: set[str] = set()

    def update(self, rewards_per_func: torch.Tensor) -> None:
        """`rewards_per_func`: (completions, rewards) across all processes, NaN where a reward returned None. Every
        process sees the same gathered tensor, so all of them raise at the same step."""
        unscored = torch.isnan(rewards_per_func)
        if rewards_per_func.numel() == 0:
            return
        for i, (name, column) in enumerate(zip(self.reward_names, unscored.T, strict=True)):
            self.consecutive_per_reward[i] = self.consecutive_per_reward[i] + 1 if bool(column.all()) else 0
            if self.max_unscored_steps and self.consecutive_per_reward[i] == self.max_unscored_steps:
                if name not in self.warned and not bool(unscored.all()):
                    self.warned.add(name)
                    logger.warning(
                        "reward %s returned None for every completion in %d generation batches in a row: it "
                        "contributes nothing to the advantages (the other rewards still train)",
                        name,
                        self.max_unscored_steps,
                    )
        if not bool(unscored.all(dim=1).all()):
            self.consecutive = 0
            return
        self.consecutive += 1
        if self.max_unscored_steps and self.consecutive >= self.max_unscored_steps:
            raise UnscoredRewardsError(
                f"no completion could be scored in {self.consecutive} consecutive generation batches "
                f"(max_unscored_steps={self.max_unscored_steps}): rewards {', '.join(self.reward_names)} returned None "
                "for every completion, so these steps had zero advantage and trained nothing. Check the reward "
                "functions against the data, or the judge endpoint if a reward uses one; raise max_unscored_steps "
                "(0 disables) to tolerate longer outages."
            )


class NoSignalWatch:
    """Counts generation batches in which every group's rewards were identical (TRL's `frac_reward_zero_std` = 1).

    Then every advantage is 0 and the rewards give no gradient: the loss, `grad_norm` 0 and an unchanged adapter are
    the only traces. A model that never writes an answer the rewards can tell apart (a random tiny model; a base model
    that ignores the answer format) trains nothing, and without this the run looks like it succeeded. The trainer
    warns once after `warn_after` such batches in a row and says at the end how many batches had no signal.
    """

    def __init__(self, warn_after: int = 3) -> None:
        self.warn_after = warn_after
        self.in_a_row = 0
        self.total = 0
        self.batches = 0
        self.warned = False

    def update(self, frac_zero_std: float, reward_stds: dict[str, float]) -> None:
        self.batches += 1
        if frac_zero_std < 1.0:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.warn_after and not self.warned:
            self.warned = True
            flat = ", ".join(f"{name} std {std:.3g}" for name, std in reward_stds.items())
            logger.warning(
                "no learning signal: in %d generation batches in a row every group of completions got identical "
                "rewards (frac_reward_zero_std = 1; %s), so every advantage is 0 and the rewards give no gradient. "
                "Usually the model never writes an answer the rewards can tell apart (a random tiny model, or a model "
                "that does not follow the answer format): read a few completions, check each reward on them, or "
                "raise temperature / num_generations.",
                self.in_a_row,
                flat,
            )

    def summary(self) -> str | None:
        if not self.total:
            return None
        return (
            f"{self.total} of {self.batches} generation batches had no learning signal (identical rewards in every "
            "group, zero advantages)" + (": the rewards never moved the policy" if self.total == self.batches else "")
        )


class VLMGRPOTrainer(GRPOTrainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        training_args = kwargs.get("args")
        if training_args is not None and training_args.use_vllm:
            with self._policy_vllm_generation(kwargs["model"], kwargs.get("processing_class"), training_args):
                super().__init__(*args, **kwargs)
        else:
            super().__init__(*args, **kwargs)
        self.add_callback(RewardPlotCallback())
        self.add_callback(GenerationBoundaryCallback())
        self.no_signal = NoSignalWatch()
        self.unscored_guard = UnscoredStepGuard(
            list(self.reward_func_names), int(getattr(self.args, "max_unscored_steps", 5))
        )
        self._video_prompt: tuple[list[list[int]], dict[str, Any]] | None = None  # encoded prompts of this batch
        self._video_rows: dict[str, list[torch.Tensor]] | None = None  # per-row video tensors for log-prob forwards
        # A sampled image/video placeholder would claim vision features that do not exist. TRL suppresses the image
        # token only when the processing class is a processor; a VLM trained on text (the text encoder of Qwen-Image)
        # or on video needs both kept out of sampling.
        placeholders = [getattr(self.model.config, k, None) for k in ("image_token_id", "video_token_id")]
        if hasattr(self, "generation_kwargs"):
            suppress = list(self.generation_kwargs.get("suppress_tokens") or [])
            suppress += [t for t in placeholders if t is not None and t not in suppress]
            if suppress:
                self.generation_kwargs["suppress_tokens"] = suppress
                self.generation_config.suppress_tokens = suppress
        # TRL left-pads prompt ids but re-runs the processor (`padding=True`) for the log-prob forwards' image fields;
        # with a right-padding tokenizer (Qwen-Image-Edit's pipeline.processor) the per-token mm_token_type_ids /
        # token_type_ids of every shorter prompt land beside the wrong tokens, so old, reference and current
        # log-probs use other image positions than generation did.
        tokenizer = getattr(self.processing_class, "tokenizer", None)
        if tokenizer is not None and getattr(tokenizer, "padding_side", "left") != "left":
            logger.info("processor padded on the %s: set to left, as TRL pads prompts", tokenizer.padding_side)
            tokenizer.padding_side = "left"
        # Each unique image/clip processed and encoded once per generation batch (see core.training.vision_reuse).
        reuse = bool(getattr(self.args, "reuse_vision", True)) and self.processing_class is not None
        self.vision_reuse = VisionReuse(self.model, self.processing_class) if reuse else None
        self.trainable_summary = trainable_report(self.model)
        if self.accelerator.is_main_process:
            print(self.trainable_summary, flush=True)

    @staticmethod
    @contextmanager
    def _policy_vllm_generation(model: Any, processing_class: Any, training_args: Any) -> Iterator[None]:
        """While TRL's __init__ runs, its `VLLMGeneration` is `core.training.vllm_generation.PolicyVLLMGeneration` set
        up for
        this policy (TRL constructs it by that module-level name and offers no hook): placeholder ids kept out of
        sampling, the engine built from a servable folder with the trainer's pixel bounds. See that module."""
        import trl.trainer.grpo_trainer as grpo_module

        from core.training.vllm_generation import (
            POLICY_FOLDER,
            PolicyVLLMGeneration,
            engine_processor_kwargs,
            needs_policy_folder,
            suppress_placeholders,
            write_policy_folder,
        )

        training_args.generation_kwargs = suppress_placeholders(training_args.generation_kwargs, model.config)
        served_from = None
        if training_args.vllm_mode == "colocate" and needs_policy_folder(model):
            with PartialState().local_main_process_first():  # the other ranks then find it in place
                served_from = write_policy_folder(
                    model, processing_class, Path(training_args.output_dir) / POLICY_FOLDER
                )
        factory = partial(
            PolicyVLLMGeneration,
            served_from=served_from,
            mm_processor_kwargs=engine_processor_kwargs(processing_class),
        )
        original = grpo_module.VLLMGeneration
        grpo_module.VLLMGeneration = factory
        try:
            yield
        finally:
            grpo_module.VLLMGeneration = original

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:  # evaluation batches neither count nor reset the streak
            self.unscored_guard.update(rewards_per_func)
        return rewards_per_func

    # ----------------------------------------------------------------------------------------------- video path
    def encode_video_prompts(self, prompts: list, videos: list, fps: list | None = None) -> Any:
        """The processor call for prompts with one clip each, as generation and every log-prob forward use it."""
        return encode_prompts(self.processing_class, prompts, videos=videos, fps=fps, **self.chat_template_kwargs)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.vision_reuse is None:
            output = self._sample_and_score(inputs)
        else:
            with self.vision_reuse.scope():
                output = self._sample_and_score(inputs)
        metrics = self._metrics["train"]
        if self.model.training and self.accelerator.is_main_process and metrics.get("frac_reward_zero_std"):
            stds = {name: metrics[f"rewards/{name}/std"][-1] for name in self.reward_func_names}
            self.no_signal.update(metrics["frac_reward_zero_std"][-1], stds)
        return output

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            if self.vision_reuse is not None:
                self.vision_reuse.release()
            summary = self.no_signal.summary()
            if summary and self.accelerator.is_main_process:
                logger.warning(summary)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().evaluate(*args, **kwargs)
        finally:  # the training batch in progress (if any) encodes its images again: correct, only not reused
            if self.vision_reuse is not None:
                self.vision_reuse.release()

    def _sample_and_score(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not inputs or VIDEO_COLUMN not in inputs[0]:
            if self.use_vllm:  # vLLM's processor and the trainer's then see the same pixels, hence the same tokens
                inputs = fit_images_to_processor(self.processing_class, inputs)
            return super()._generate_and_score_completions(inputs)
        if any(k in inputs[0] for k in ("image", "images")):
            raise ValueError("rows with both a video and images are not supported; use one or the other")
        enc = encode_video_rows(self.processing_class, inputs, **self.chat_template_kwargs)
        mask = enc["attention_mask"].bool()
        prompt_ids = [ids[m].tolist() for ids, m in zip(enc["input_ids"], mask, strict=True)]
        # mm_token_type_ids is rebuilt from the ids in every forward (see _video_forward_kwargs); generation takes the
        # processor's own, left-padded by TRL like the ids.
        fields = {k: enc[k] for k in VIDEO_KEYS if k in enc}
        if "mm_token_type_ids" in enc:
            fields["mm_token_type_ids"] = [t[m].tolist() for t, m in zip(enc["mm_token_type_ids"], mask, strict=True)]
        rows = split_video_tensors(enc)
        self._video_prompt = (prompt_ids, fields)
        try:
            with self.video_rows(rows):
                output = super()._generate_and_score_completions(inputs)
        finally:
            self._video_prompt = None
        output.update(rows)  # lists: TRL's shuffle/split permute and slice them with the other per-row values
        return output

    def _tokenize_prompts(self, prompts: list):
        if self._video_prompt is None:
            return super()._tokenize_prompts(prompts)
        prompt_ids, fields = self._video_prompt
        return prompt_ids, None, fields

    def _compute_loss(self, model, inputs):
        if VIDEO_KEYS[0] not in inputs:
            return super()._compute_loss(model, inputs)
        with self.video_rows({k: inputs[k] for k in VIDEO_KEYS if k in inputs}):
            return super()._compute_loss(model, inputs)

    @contextmanager
    def video_rows(self, rows: dict[str, list[torch.Tensor]]) -> Iterator[None]:
        """Attach per-row video tensors to the log-prob forwards run inside this block (rows in batch order)."""
        previous, self._video_rows = self._video_rows, rows
        try:
            yield
        finally:
            self._video_rows = previous

    def _video_forward_kwargs(self, input_ids: torch.Tensor, start: int, end: int) -> dict[str, torch.Tensor]:
        rows = self._video_rows
        device = input_ids.device
        kwargs = {k: torch.cat(list(rows[k][start:end])).to(device) for k in VIDEO_KEYS if k in rows}
        if "pixel_values_videos" in kwargs:
            kwargs["pixel_values_videos"] = kwargs["pixel_values_videos"].to(self.model.dtype)
        # 2 marks video placeholders for the multimodal rotary positions; recomputed on the prompt+completion ids
        # so it always matches the padding and length of the batch at hand.
        video_token_id = self.model.config.video_token_id
        kwargs["mm_token_type_ids"] = (input_ids == video_token_id).long() * 2
        return kwargs

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **kwargs,
    ):
        if self._video_rows is None:
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **kwargs,
            )
        # Same computation as TRL's loop, with each chunk's own video tensors added to the forward.
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies, all_aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            model_inputs = {"input_ids": ids, "attention_mask": mask, **self._video_forward_kwargs(ids, start, end)}
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            with self.accelerator.autocast():
                outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            all_logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                all_entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                all_aux.append(outputs.aux_loss)
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux_loss = torch.stack(all_aux).mean() if compute_aux_loss else None
        return logps, entropies, aux_loss


def split_video_tensors(encoding: Any) -> dict[str, list[torch.Tensor]]:
    """Processor output for one video per row -> per-row tensors: patches by each video's grid, grid and timing
    rows one each."""
    grid = encoding["video_grid_thw"]
    rows: dict[str, list[torch.Tensor]] = {
        "pixel_values_videos": list(torch.split(encoding["pixel_values_videos"], grid.prod(-1).tolist())),
        "video_grid_thw": list(grid.split(1)),
    }
    if "second_per_grid_ts" in encoding:
        rows["second_per_grid_ts"] = list(torch.as_tensor(encoding["second_per_grid_ts"]).split(1))
    return rows
