"""Errors a person can act on (issue 15, items 1, 4, 6): a start-up error is one message without a traceback,
printed once and last by the launcher; numeric options are range-checked at parse time; an unknown key or flag gets
"did you mean"; monitor_and_run.sh does not relaunch a run that cannot succeed.

The recipe runs fail before any model loads (a parse-time error, or a missing data file), so each costs seconds.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.errors import USER_ERROR_EXIT, is_user_error
from core.ranges import POSITIVE, Range
from core.training.config import ConfigError, parse_config
from tests.helpers import RECIPES_DIR, REPO_ROOT, run_smoke_train, subprocess_env

HINT = "(set VLM_GRPO_TRACEBACK=1 for the full traceback)"


def out_of_range(*lines: str, prefix: str = "ConfigError: ") -> list[str]:
    return [
        f"{prefix}out-of-range value(s) (set in the config file or on the command line):",
        *(f"  {line}" for line in lines),
        "Set each to a value within its range.",
    ]


# One numeric option of each recipe's own ScriptArguments, set out of its range.
OUT_OF_RANGE = {
    "grounding": (["--max_train_samples", "0"], "--max_train_samples 0: must be >= 1"),
    "image2code": (["--sandbox_wall_s", "-1"], "--sandbox_wall_s -1.0: must be > 0"),
    "image_edit": (["--complexities", "0", "9"], "--complexities [0, 9]: must be in [1, 8]"),
    "mathvista": (["--image_size", "0"], "--image_size 0: must be >= 1"),
    "mmmg": (["--num_inference_steps", "0"], "--num_inference_steps 0: must be >= 1"),
    "video": (["--max_frames", "0"], "--max_frames 0: must be >= 1"),
}


@pytest.mark.parametrize("recipe", sorted(OUT_OF_RANGE))
def test_direct_run_prints_a_config_error_as_one_message_without_traceback(recipe, tmp_path):
    flags, problem = OUT_OF_RANGE[recipe]
    proc = run_smoke_train(recipe, "--output_dir", str(tmp_path / "run"), *flags, timeout=300)
    assert proc.returncode == USER_ERROR_EXIT, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-4:] == [*out_of_range(problem), HINT]
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_direct_run_traceback_on_request(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(RECIPES_DIR / "image2code" / "train.py"), "--config"]
        + [str(RECIPES_DIR / "image2code" / "config_smoke.yaml"), "--output_dir", str(tmp_path)]
        + ["--sandbox_wall_s", "0"],
        cwd=REPO_ROOT,
        env=subprocess_env(VLM_GRPO_TRACEBACK="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == USER_ERROR_EXIT
    assert "Traceback (most recent call last)" in proc.stderr and "in check_ranges" in proc.stderr
    assert proc.stderr.strip().endswith("--sandbox_wall_s 0.0: must be > 0\nSet each to a value within its range.")


def test_direct_run_missing_train_file_is_one_message(tmp_path):
    proc = run_smoke_train("grounding", "--output_dir", str(tmp_path / "run"), "--train_file", "data/nosuch/t.jsonl")
    assert proc.returncode == USER_ERROR_EXIT, proc.stdout[-3000:] + proc.stderr[-3000:]
    missing = RECIPES_DIR / "grounding" / "data" / "nosuch" / "t.jsonl"
    assert proc.stderr.strip().splitlines()[-3:] == [
        f"DataError: 1 problem(s) in {missing}:",
        f"  - file not found: {missing}",
        HINT,
    ]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_launcher_prints_the_start_up_error_once_and_last_with_the_trace_in_the_log(tmp_path):
    """Two ranks hit the same missing file: the console shows the message once, as its last lines, and no rank
    traceback; training.log keeps the first failing rank's traceback; the launcher exits 2."""
    out = tmp_path / "run"
    proc = subprocess.run(
        ["bash", str(RECIPES_DIR / "grounding" / "run_8gpu.sh"), "--train_file", "data/nosuch/t.jsonl"]
        + ["--output_dir", str(out)],
        cwd=REPO_ROOT,
        env=subprocess_env(SMOKE="1", NUM_GPUS="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    console = proc.stdout + proc.stderr
    missing = RECIPES_DIR / "grounding" / "data" / "nosuch" / "t.jsonl"
    message = [f"DataError: 1 problem(s) in {missing}:", f"  - file not found: {missing}"]
    assert proc.returncode == USER_ERROR_EXIT, console[-5000:]
    assert proc.stdout.rstrip().splitlines()[-3:] == [
        "== the run stopped on this error; fix it and launch again:",
        *message,
    ]
    assert console.count("file not found") == 1
    assert "raise DataError" not in console  # no rank's traceback on the console
    assert (out / "error.txt").read_text().splitlines() == message
    log = (out / "training.log").read_text()
    # The rank that failed first always writes its traceback before it exits; torch's elastic agent then stops the
    # other rank, which may or may not have got as far as writing its own (seen both ways on 2 busy cores).
    assert log.count("raise DataError") == log.count("] Traceback") >= 1
    assert "[rank 0] Traceback" in log or "[rank 1] Traceback" in log


def test_monitor_does_not_relaunch_a_run_stopped_by_a_start_up_error(tmp_path):
    proc = subprocess.run(
        ["bash", str(RECIPES_DIR / "image_edit" / "monitor_and_run.sh"), "bad", "--num_inference_steps", "0"],
        cwd=REPO_ROOT,
        env=subprocess_env(SMOKE="1", NUM_GPUS="1", OUTPUT_ROOT=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == USER_ERROR_EXIT, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "== bad stopped on an error in its input; not relaunching (it cannot succeed until this is fixed):",
        *out_of_range("--num_inference_steps 0: must be >= 1"),
        f"== full log: {tmp_path}/bad/training.log",
    ]
    assert "relaunching" not in proc.stdout
    assert (tmp_path / "bad" / "training.log").read_text().count(" image_edit on 1 machine(s)") == 1  # one launch


# --- parse-time checks, in process ------------------------------------------------------------------------------


@dataclass
class Script:
    train_file: str = "x.jsonl"
    wall_s: float = field(default=10.0, metadata={"range": POSITIVE, "help": "Seconds."})
    levels: list[int] = field(default_factory=lambda: [1], metadata={"range": (1, 8)})
    cap: int | None = field(default=None, metadata={"range": (1, None)})


BASE = ["--report_to", "none", "--bf16", "false"]


@pytest.fixture
def keep_excepthook(monkeypatch):
    """parse_config installs core.errors' excepthook; the test process gets its own back afterwards."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


def test_unknown_config_key_suggests_the_closest(tmp_path, keep_excepthook):
    config = tmp_path / "c.yaml"
    config.write_text("wall_sec: 3\nlerning_rate: 0.1\nzzzz: 1\n")
    with pytest.raises(ConfigError) as err:
        parse_config(Script, ["--config", str(config), "--output_dir", str(tmp_path), *BASE])
    assert str(err.value).splitlines() == [
        f"unknown key wall_sec in config file {config}; did you mean wall_s?",
        f"unknown key lerning_rate in config file {config}; did you mean learning_rate?",
        f"unknown key zzzz in config file {config} (no known key is close; see --help)",
    ]


def test_unknown_flag_suggests_the_closest(tmp_path, keep_excepthook):
    with pytest.raises(ConfigError) as err:
        parse_config(Script, ["--output_dir", str(tmp_path), "--num_generation", "4", *BASE])
    assert str(err.value) == "unknown flag --num_generation in the command line; did you mean --num_generations?"


def test_bad_flag_value_is_a_config_error_not_a_usage_dump(tmp_path, keep_excepthook):
    with pytest.raises(ConfigError, match=r"^argument --cap: invalid int value: 'abc' \(see --help\)$"):
        parse_config(Script, ["--output_dir", str(tmp_path), "--cap", "abc", *BASE])


def test_every_out_of_range_value_is_listed_and_none_means_default(tmp_path, keep_excepthook):
    args = ["--output_dir", str(tmp_path), "--wall_s", "0", "--levels", "1", "9", "--temperature", "-1", *BASE]
    with pytest.raises(ConfigError) as err:
        parse_config(Script, args)
    assert str(err.value).splitlines() == out_of_range(
        "--wall_s 0.0: must be > 0", "--levels [1, 9]: must be in [1, 8]", "--temperature -1.0: must be > 0", prefix=""
    )
    script, _, _ = parse_config(Script, ["--output_dir", str(tmp_path), *BASE])  # cap None: allowed
    assert script.cap is None


def test_range_bounds():
    assert 0 not in POSITIVE and 1e-9 in POSITIVE and float("nan") not in POSITIVE
    assert Range(0, 1, high_open=True).describe() == "in [0, 1)" and 1 not in Range(0, 1, high_open=True)
    assert Range(None, 5).describe() == "<= 5"


# --- which exceptions are "user-facing" -------------------------------------------------------------------------


def raised_in(
    tmp_path: Path, file_name: str, function: str, exc: BaseException | None, body: str = "raise exc"
) -> BaseException:
    """`exc` raised (by `body`) from `function` in a real module `file_name` outside the project (a library's frame)."""
    source = tmp_path / file_name
    source.write_text(f"def {function}(exc):\n    {body}\n")
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    try:
        namespace[function](exc)
    except BaseException as caught:  # noqa: BLE001 - the point is to keep the traceback
        return caught
    raise AssertionError("not raised")


def test_library_value_error_during_training_keeps_its_traceback(tmp_path):
    assert not is_user_error(raised_in(tmp_path, "trainer.py", "_inner_training_loop", ValueError("nan loss")))
    assert is_user_error(raised_in(tmp_path, "configuration.py", "from_pretrained", ValueError("bad value")))
    assert not is_user_error(raised_in(tmp_path, "configuration.py", "load", RuntimeError("bug")))
    unpacking = raised_in(tmp_path, "helpers.py", "split", None, body="a, b = [1]")
    assert isinstance(unpacking, ValueError) and not is_user_error(unpacking)  # the interpreter's: a bug


def test_a_bug_keeps_its_traceback_and_exit_status(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "from dataclasses import dataclass\nfrom core.training.config import parse_config\n\n@dataclass\nclass S:\n"
        "    x: int = 1\n\n"
        f"parse_config(S, ['--output_dir', {str(tmp_path)!r}, '--report_to', 'none', '--bf16', 'false'])\n"
        "raise RuntimeError('a bug')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and proc.stderr.strip().endswith("RuntimeError: a bug")


@pytest.mark.parametrize("recipe", ["grounding", "mmmg"])
def test_evaluate_prints_a_wrong_folder_as_one_message(recipe, tmp_path):
    """evaluate.py installs the same hook as train.py: a mistyped run folder or a file is one message, exit 2."""
    config = RECIPES_DIR / recipe / "config_smoke.yaml"
    for target, what in ((tmp_path / "rnu", "no such folder"), (config, "is a file, not a folder")):
        proc = subprocess.run(
            [sys.executable, str(RECIPES_DIR / recipe / "evaluate.py"), str(target)],
            cwd=REPO_ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == USER_ERROR_EXIT, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert f"FileNotFoundError: {target}: {what}. Pass a training output folder" in proc.stderr
