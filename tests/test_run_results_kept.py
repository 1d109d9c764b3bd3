"""A run's results are never lost to a second command, and the console shows what a person needs.

- A new run into an output_dir holding a finished run (even one saved without checkpoints, `--save_strategy no`) is
  refused before anything is written, unless `--overwrite_output_dir true`, which deletes the earlier run first.
- `--resume_from_checkpoint true` on a run that already reached its steps is a no-op: it says so, exits 0 and changes
  no file (Trainer would train 0 steps and rewrite train_results.json, trainer_state.json and the curve).
- transformers' INFO dumps (configs, processors, tokenizers) stay off the console: a smoke run shows progress, the
  trainable-parameter report, rewards per step and where the results are.

One real 2-step grounding smoke run (tiny model, CPU) serves every end-to-end check; the rest call `setup_run` on
folders laid out as a finished or interrupted run leaves them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import transformers

from core.training.config import VLMGRPOConfig
from core.training.run import finish_pending_overwrite, setup_logging, setup_run
from tests.helpers import load_recipe_module, run_smoke_train


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time (ns), keyed by relative path."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def config(out: Path, **overrides) -> VLMGRPOConfig:
    values = {
        "output_dir": str(out),
        "bf16": False,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "report_to": "none",
        "max_steps": 4,
        "save_steps": 2,
    }
    return VLMGRPOConfig(**{**values, **overrides})


def finished_run_folder(out: Path, step: int = 4, checkpoints: tuple[int, ...] = (2, 4)) -> Path:
    """The files `train_and_save` leaves after a run of `step` steps (contents abbreviated), plus its checkpoints and
    the launcher's training.log."""
    out.mkdir(parents=True)
    state = json.dumps({"global_step": step, "max_steps": step, "epoch": 0.5, "log_history": []})
    for n in checkpoints:
        (out / f"checkpoint-{n}").mkdir()
        (out / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps({"global_step": n}))
    (out / "trainer_state.json").write_text(state)
    (out / "train_results.json").write_text('{"train_loss": 0.1}')
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    (out / "reward_curve.png").write_bytes(b"png")
    (out / "run_config.yaml").write_text("GRPOConfig: {}\n")
    (out / "training.log").write_text("the first run's console\n")
    (out / "eval").mkdir()
    (out / "eval" / "metrics.json").write_text("{}")
    return out


# ------------------------------------------------------------------------------------- setup_run on laid-out folders
def test_resume_of_a_finished_run_with_checkpoints_says_so_and_changes_no_file(tmp_path, caplog):
    out = finished_run_folder(tmp_path / "run")
    before = snapshot(out)
    with caplog.at_level(logging.WARNING, logger="core"), pytest.raises(SystemExit) as stop:
        setup_run(config(out, resume_from_checkpoint="true"))
    assert stop.value.code == 0
    assert snapshot(out) == before
    assert (
        f"Nothing to resume: {out} already holds a finished run (trained to step 4; its model, trainer_state.json and "
        "train_results.json), reaching the 4 steps asked for. No file was changed. To train it further, raise "
        "--max_steps and pass --resume_from_checkpoint true; to start over, pass --overwrite_output_dir true or "
        "another --output_dir." in caplog.text
    )


def test_resume_of_a_finished_run_with_more_steps_continues_from_its_last_checkpoint(tmp_path):
    out = finished_run_folder(tmp_path / "run")
    assert setup_run(config(out, resume_from_checkpoint="true", max_steps=8)) == str(out / "checkpoint-4")


def test_new_run_into_a_finished_run_is_refused_and_nothing_is_touched(tmp_path):
    out = finished_run_folder(tmp_path / "run")
    before = snapshot(out)
    with pytest.raises(FileExistsError) as err:
        setup_run(config(out))
    assert str(err.value) == (
        f"{out} already holds a finished run (trained to step 4; its model, trainer_state.json and "
        "train_results.json). Nothing was touched. Pass another --output_dir to keep it, or --overwrite_output_dir "
        "true to delete it and start over; to train it further, raise --max_steps and pass --resume_from_checkpoint "
        "true."
    )
    assert snapshot(out) == before


def test_overwrite_output_dir_deletes_the_earlier_run_but_keeps_the_log(tmp_path):
    out = finished_run_folder(tmp_path / "run")
    log = (out / "training.log").read_bytes()
    before = snapshot(out)
    assert setup_run(config(out, overwrite_output_dir=True)) is None
    assert snapshot(out) == before  # nothing deleted or written until training starts: a failed start keeps it
    (out / "written_by_this_run").mkdir()  # e.g. the trainer's vllm_policy folder, made before training starts
    finish_pending_overwrite(out)
    assert sorted(p.name for p in out.iterdir()) == ["run_config.yaml", "training.log", "written_by_this_run"]
    assert (out / "training.log").read_bytes() == log
    assert "overwrite_output_dir: true" in (out / "run_config.yaml").read_text()


def test_interrupted_run_refusal_offers_resume_and_overwrite(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    with pytest.raises(FileExistsError) as err:
        setup_run(config(out))
    assert str(err.value) == (
        f"{out} already holds checkpoints from an earlier run. Continue it with --resume_from_checkpoint true, pass "
        "another --output_dir, or --overwrite_output_dir true to delete it and start over; nothing was overwritten."
    )
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2"]


def test_overwrite_and_resume_together_are_refused(tmp_path):
    out = finished_run_folder(tmp_path / "run")
    before = snapshot(out)
    with pytest.raises(ValueError, match="--overwrite_output_dir true deletes the earlier run and "):
        setup_run(config(out, overwrite_output_dir=True, resume_from_checkpoint="true"))
    assert snapshot(out) == before


def test_transformers_info_dumps_are_off_unless_log_level_asks(tmp_path):
    try:
        setup_logging(config(tmp_path / "a"))
        assert transformers.utils.logging.get_verbosity() == logging.WARNING
        setup_logging(config(tmp_path / "b", log_level="info"))
        assert transformers.utils.logging.get_verbosity() == logging.INFO
    finally:
        transformers.utils.logging.set_verbosity_warning()


# -------------------------------------------------------------------------------- one real smoke run, end to end
@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grounding_sample")
    load_recipe_module("grounding", "sample").make_sample(out, num_samples=12, num_eval=4, seed=0)
    return out


def smoke_flags(sample: Path, out: Path, *extra: str) -> list[str]:
    """grounding's smoke config, 2 steps, no checkpoints: the run of issue 15 items 7 and 8."""
    data = ["--train_file", str(sample / "train.jsonl"), "--eval_file", str(sample / "eval.jsonl")]
    run = ["--output_dir", str(out), "--max_steps", "2", "--save_strategy", "no"]
    return [*data, *run, "--warm_start_steps", "0", *extra]  # results kept, not learning (test_smoke_learns; CI time)


@pytest.fixture(scope="module")
def finished_smoke(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "no_checkpoints"
    proc = run_smoke_train("grounding", *smoke_flags(sample, out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_smoke_console_is_progress_rewards_and_where_the_results_are(finished_smoke):
    out, proc = finished_smoke
    console = proc.stdout + proc.stderr
    assert console.count("\n") < 120, console
    for dump in ("loading configuration file", "Model config", "Processor Qwen2_5_VLProcessor", "AddedToken("):
        assert dump not in console
    assert console.count("'reward': ") == 2  # one logged dict per step, each with its reward
    assert "trainable params: " in proc.stdout
    assert f"run saved to {out}" in proc.stdout


@pytest.mark.slow
def test_second_run_into_a_finished_run_without_checkpoints_is_refused(finished_smoke, sample):
    out, _ = finished_smoke
    before = snapshot(out)
    proc = run_smoke_train("grounding", *smoke_flags(sample, out))
    assert proc.returncode == 2  # core.errors.USER_ERROR_EXIT
    assert f"{out} already holds a finished run (trained to step 2;" in proc.stderr
    # No checkpoints: the message offers nothing to resume from.
    assert (
        "Nothing was touched. Pass another --output_dir to keep it, or --overwrite_output_dir true to delete it and "
        "start over.\n" in proc.stderr
    )
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_of_a_finished_run_without_checkpoints_is_a_no_op(finished_smoke, sample):
    out, _ = finished_smoke
    before = snapshot(out)
    proc = run_smoke_train("grounding", *smoke_flags(sample, out, "--resume_from_checkpoint", "true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Nothing to resume: {out} already holds a finished run (trained to step 2;" in proc.stdout
    assert "it would need checkpoints, and it was saved without any" in proc.stdout
    assert "Loading weights" not in proc.stdout + proc.stderr  # stopped before the model loads
    assert snapshot(out) == before


@pytest.mark.slow
def test_overwrite_whose_start_fails_keeps_the_earlier_run(finished_smoke, sample, tmp_path):
    """--overwrite_output_dir deletes nothing until training starts: a wrong data path must not cost the run."""
    out, _ = finished_smoke
    before = snapshot(out)
    missing = tmp_path / "nodata" / "train.jsonl"
    flags = smoke_flags(sample, out, "--overwrite_output_dir", "true", "--train_file", str(missing))
    proc = run_smoke_train("grounding", *flags)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"file not found: {missing}" in proc.stderr
    console = proc.stdout + proc.stderr
    # train.py checks the data before it claims the output folder: the overwrite is not even queued.
    assert "is deleted when training starts" not in console and "entries of the earlier run" not in console
    assert snapshot(out) == before
    # A start that fails after the folder is claimed (here the trainer refuses 2 weights for 3 rewards): still kept.
    proc = run_smoke_train(
        "grounding", *smoke_flags(sample, out, "--overwrite_output_dir", "true"), "--reward_weights", "1", "2"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "Number of reward weights (2) must match" in console
    assert "is deleted when training starts" in console and "entries of the earlier run" not in console
    assert snapshot(out) == before
