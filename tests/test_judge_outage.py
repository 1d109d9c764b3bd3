"""A judge that fails every sample of the run: the start-up check passes (the endpoint serves the model), every
sample's judge requests fail (the local judge's `[judge:500]` marker in each instruction), every judge reward returns
None. Before max_unscored_steps the run exited 0 with loss 0 and an unchanged adapter; now it stops with an error
naming the rewards, and saves no final model."""

from __future__ import annotations

import datasets
import pytest

from tests.helpers import load_recipe_module, run_smoke_train

pytestmark = pytest.mark.slow


def test_image_edit_run_stops_when_the_judge_answers_nothing(tmp_path):
    sample = load_recipe_module("image_edit", "sample").make_sample(tmp_path / "s", 5, num_syn=1)["dataset"]
    dd = datasets.load_from_disk(str(sample))

    def fail_judge(row):
        compound = [
            {**lvl, "compound_instruction": "[judge:500] " + lvl["compound_instruction"]}
            for lvl in row["edit"]["compound"]
        ]
        return {"edit": {"atom": row["edit"]["atom"], "compound": compound}}

    failing = tmp_path / "failing"
    datasets.DatasetDict({"test_real": dd["test_real"].map(fail_judge)}).save_to_disk(str(failing))
    out = tmp_path / "run"
    proc = run_smoke_train(
        "image_edit",
        *("--dataset", str(failing), "--output_dir", str(out), "--judge_max_retries", "0"),
        *("--max_steps", "5", "--max_unscored_steps", "2", "--disable_tqdm", "true"),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    assert "UnscoredRewardsError: no completion could be scored in 2 consecutive generation batches" in output
    assert "instruction_following, identity_preservation, perceptual_quality returned None" in output
    assert not (out / "adapter_model.safetensors").exists() and not (out / "trainer_state.json").exists()
