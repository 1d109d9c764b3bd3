"""End to end on CPU with the tiny Gemma-3: train.py (backend transformers), evaluate.py and infer.py on the saved
adapter, the start-up refusal of backend unsloth without a GPU, and the launcher's 2-process smoke run.

Real subprocesses, real files. A dense toy reward (tests.fixtures.toy_rewards) is added to the recipe's rewards so a
random tiny model gets a non-zero GRPO advantage and the LoRA weights must move.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env

RECIPE = REPO_ROOT / "recipes" / "mathvista"
TOY = "tests.fixtures.toy_rewards:even_token_fraction"
# The dense toy reward moves LoRA here; the smoke config's warm start and its longer answers are tested in
# test_smoke_learns.py, so these runs skip them (CI time).
NO_WARM_START = ("--warm_start_steps", "0", "--max_completion_length", "32")
N_ROWS, TRAINED = 20, 14
pytestmark = pytest.mark.slow


def env(**extra: str) -> dict[str, str]:
    return subprocess_env(**extra)


def run(cmd: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(**extra_env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    sample = load_recipe_module("mathvista", "sample")
    return sample.make_sample(tmp_path_factory.mktemp("mathvista"), num_samples=N_ROWS, seed=3)["dataset"]


def train_cmd(sample: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--dataset_name",
        str(sample),
        "--max_samples",
        str(TRAINED),
        "--output_dir",
        str(output_dir),
        "--reward_funcs",
        "formatting_reward",
        "correctness_reward",
        TOY,
        "--disable_tqdm",
        "true",
        *NO_WARM_START,
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "two_steps"
    run(train_cmd(sample, out, "--max_steps", "2", "--save_steps", "2"))
    return out


def test_training_saves_a_moved_language_only_adapter_with_processor_and_config(trained_run):
    final = trained_run / "final_model"
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
        "run_config.yaml",
    ):
        assert (final / name).is_file(), name
    weights = load_file(str(final / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    # LoRA B starts at exactly zero: a non-zero norm means the optimiser changed trainable parameters.
    assert lora_b and float(torch.stack([w.float().norm() for w in lora_b]).sum()) > 0
    assert all("language_model" in name for name in weights), "vision tower or projector adapted"
    state = json.loads((trained_run / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    logged = [e for e in state["log_history"] if "reward" in e]
    assert len(logged) == 2
    assert all(f"rewards/{r}/mean" in e for e in logged for r in ("formatting_reward", "correctness_reward"))
    config = yaml.safe_load((final / "run_config.yaml").read_text())
    assert config["ScriptArguments"]["backend"] == "transformers"
    assert config["GRPOConfig"]["loss_type"] == "dr_grpo"
    assert config["VLMModelConfig"]["model_name_or_path"] == "tiny:gemma3"


@pytest.fixture(scope="module")
def evaluated(trained_run) -> Path:
    run([sys.executable, str(RECIPE / "evaluate.py"), str(trained_run), "--batch_size", "1", "--max_new_tokens", "12"])
    return trained_run / "eval"


def test_evaluate_scores_the_held_out_rows_and_breaks_accuracy_down(evaluated, sample):
    split = load_recipe_module("mathvista", "data").load_split(sample, "testmini")
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["held_out"] is True and metrics["start"] == TRAINED
    assert metrics["num_samples"] == N_ROWS - TRAINED
    records = [json.loads(line) for line in (evaluated / "predictions.jsonl").read_text().splitlines()]
    assert [r["pid"] for r in records] == split["pid"][TRAINED:]
    assert metrics["accuracy"] == sum(r["correct"] for r in records) / len(records)
    assert metrics["format_rate"] == sum(r["format_ok"] for r in records) / len(records)
    assert metrics["reward_accuracy"] == sum(r["reward_correct"] for r in records) / len(records)
    assert "calculate_score" in metrics["protocol"] and "53d5258" in metrics["protocol"]
    for key in ("question_type", "answer_type", "task", "grade"):
        table = metrics[f"accuracy_by_{key}"]
        assert sum(group["count"] for group in table.values()) == len(records)
        assert set(table) == {str(r[key]) for r in records}
    assert (evaluated / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(evaluated / "examples.png") as examples:  # one 256-pixel panel per scored item, 4 a row
        assert examples.width == min(4, len(records)) * (256 + 6) + 6


def test_infer_streams_the_same_answer_evaluate_generated(evaluated, sample, tmp_path):
    row = load_recipe_module("mathvista", "data").load_split(sample, "testmini")[TRAINED]
    row["decoded_image"].save(tmp_path / "chart.png")
    cmd = [
        sys.executable,
        str(RECIPE / "infer.py"),
        str(evaluated.parent / "final_model"),
        "--image",
        str(tmp_path / "chart.png"),
        "--question",
        row["question"],
        "--answer_type",
        row["answer_type"],
        "--max_new_tokens",
        "12",
    ]
    if row["choices"]:
        cmd += ["--choices", *row["choices"]]
    if row["precision"] is not None:
        cmd += ["--precision", str(int(row["precision"]))]
    if row["unit"]:
        cmd += ["--unit", row["unit"]]
    proc = run(cmd)
    first = json.loads((evaluated / "predictions.jsonl").read_text().splitlines()[0])
    streamed = proc.stdout.split("A: ", 1)[1]
    assert streamed.strip() == first["completion"].strip() != ""
    assert "final answer:" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")
def test_backend_unsloth_without_a_gpu_stops_before_anything_is_written(sample, tmp_path):
    out = tmp_path / "never"
    proc = subprocess.run(
        train_cmd(sample, out, "--backend", "unsloth"),
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "backend: unsloth needs an NVIDIA GPU" in proc.stderr and "--backend transformers" in proc.stderr
    assert not out.exists()


def test_launcher_smoke_run_uses_transformers_backend_on_two_processes(sample, tmp_path):
    out = tmp_path / "launched"
    run(
        [
            "bash",
            str(RECIPE / "run_8gpu.sh"),
            "--output_dir",
            str(out),
            "--dataset_name",
            str(sample),
            "--max_samples",
            "8",
            "--max_steps",
            "1",
            "--save_steps",
            "1",
            "--disable_tqdm",
            "true",
        ],
        SMOKE="1",
        MAIN_PROCESS_PORT="29523",
    )
    log = (out / "training.log").read_text()
    assert "x 2 process(es)" in log and "--backend transformers --load_in_4bit false" in log
    assert (out / "final_model" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
