"""core/evaluation/cli.py: the command line and plumbing all six evaluate.py share (issue 16): the same flags with the
old spellings hidden, counts checked before anything loads, the data source from the run's config (old key names
too), the same result files and final lines."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from core.errors import ConfigError
from core.evaluation.cli import (
    batches,
    data_source,
    eval_parser,
    first_rows,
    media_root,
    output_dir,
    report,
    run_judge,
    write_results,
)
from core.training.config import RESOLVED_CONFIG_NAME, load_resolved_config
from tests.helpers import RECIPES_DIR, load_recipe_module

RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "evaluate.py").is_file())
SHARED_FLAGS = ("--dataset_name", "--max_samples", "--batch_size", "--max_new_tokens", "--out_dir")
HIDDEN_FLAGS = ("--data_file", "--dataset", "--max_per_config")


def parse(argv: list[str], **kwargs):
    return eval_parser("Evaluate a run.\n\nMore.", **kwargs).parse_args(argv)


def test_shared_flags_and_the_old_spellings_of_the_data_flag():
    args = parse(["run"])
    assert (args.run_dir, args.dataset_name, args.max_samples, args.batch_size, args.out_dir) == (
        Path("run"),
        None,
        None,
        8,
        None,
    )
    for flag in ("--dataset_name", "--data_file", "--dataset"):
        assert parse(["run", flag, "d.jsonl"]).dataset_name == "d.jsonl"
    assert parse(["run", "--data_file=d.jsonl"]).dataset_name == "d.jsonl"
    args = parse(["run", "--images_root", "imgs"], root_flag="images_root", batch_size=4, max_new_tokens=12)
    assert (args.images_root, args.batch_size, args.max_new_tokens) == ("imgs", 4, 12)
    assert not hasattr(args, "_spellings")


@pytest.mark.parametrize("flag", ["--batch_size", "--max_samples", "--max_new_tokens"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_count_below_one_is_one_clear_error(flag: str, value: str):
    with pytest.raises(ConfigError, match=f"argument {flag}: must be >= 1, got {value} \\(see --help\\)"):
        parse(["run", flag, value])
    with pytest.raises(ConfigError, match=f"argument {flag}: 'many' is not a whole number"):
        parse(["run", flag, "many"])


def test_two_spellings_of_one_flag_are_refused():
    with pytest.raises(ConfigError, match="--dataset_name and --data_file set the same thing"):
        parse(["run", "--dataset_name", "a", "--data_file", "b"])
    with pytest.raises(ConfigError, match="--dataset and --dataset_name set the same thing"):
        parse(["run", "--dataset", "a", "--dataset_name", "b"])


def test_the_data_source_comes_from_the_flag_else_the_runs_eval_data_else_its_training_data(tmp_path):
    for name in ("train.jsonl", "eval.jsonl", "other.jsonl"):
        (tmp_path / name).write_text("{}\n")
    script = {"dataset_name": str(tmp_path / "train.jsonl"), "eval_dataset_name": str(tmp_path / "eval.jsonl")}
    assert data_source(parse(["run"]), script, tmp_path) == str(tmp_path / "eval.jsonl")
    assert data_source(parse(["run"]), {**script, "eval_dataset_name": None}, tmp_path) == str(tmp_path / "train.jsonl")
    assert data_source(parse(["run", "--data_file", "other.jsonl"]), script, tmp_path) == str(tmp_path / "other.jsonl")
    assert data_source(parse(["run"]), {"dataset_name": "owner/name"}, tmp_path) == "owner/name"  # a hub id
    with pytest.raises(ConfigError, match="pass --dataset_name"):
        data_source(parse(["run"]), {}, tmp_path)

    # A run recorded before the shared vocabulary (train_file / eval_file) evaluates the same way.
    run = tmp_path / "old_run"
    run.mkdir()
    recorded = {"train_file": "train.jsonl", "eval_file": "eval.jsonl", "images_root": None}
    (run / RESOLVED_CONFIG_NAME).write_text(yaml.safe_dump({"ScriptArguments": recorded}))
    old_script = load_resolved_config(run)["ScriptArguments"]
    assert data_source(parse(["run"]), old_script, tmp_path) == str(tmp_path / "eval.jsonl")
    source = data_source(parse(["run"]), old_script, tmp_path)
    assert media_root(None, old_script["images_root"], tmp_path, source) == str(tmp_path)
    assert media_root(str(tmp_path / "imgs"), None, tmp_path, source) == str(tmp_path / "imgs")


def test_rows_and_batches():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"id": list(range(7))})
    assert [[r["id"] for r in rows] for rows in batches(dataset, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert (
        len(first_rows(dataset, 4)) == 4 and len(first_rows(dataset, 99)) == 7 and first_rows(dataset, None) is dataset
    )


def test_results_files_and_final_lines(tmp_path, capsys):
    args = parse([str(tmp_path / "run")])
    out = output_dir(args)
    assert out == tmp_path / "run" / "eval" and out.is_dir()
    assert output_dir(parse([str(tmp_path / "run"), "--out_dir", str(tmp_path / "x")])) == tmp_path / "x"
    metrics = {"num_samples": 2, "accuracy": 0.5, "accuracy_by_task": {"a": {"accuracy": 0.5, "count": 2}}}
    written = write_results(out, metrics, [{"id": 1}, {"id": 2}], {"data_file": "d.jsonl"})
    assert written == [out / "metrics.json", out / "predictions.jsonl"]
    assert json.loads((out / "metrics.json").read_text()) == {**metrics, "data_file": "d.jsonl"}
    assert [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()] == [{"id": 1}, {"id": 2}]
    report(metrics, [*written, out / "predictions.png"])
    printed = capsys.readouterr().out.splitlines()
    assert json.loads("\n".join(printed[:-3])) == {"num_samples": 2, "accuracy": 0.5}  # tables stay in metrics.json
    assert printed[-3:] == [
        f"wrote {out / 'metrics.json'}",
        f"wrote {out / 'predictions.jsonl'}",
        f"wrote {out}/predictions.png",
    ]


def test_the_runs_local_judge_starts_afresh_and_stops_on_the_way_out():
    script = {"judge_base_url": "local", "judge_model": "local-judge", "judge_timeout_s": 5, "seed": 0}
    with run_judge(script, judge_max_tokens=99) as judge:
        url = judge.args.judge_base_url
        assert url.startswith("http://127.0.0.1:") and judge.args.judge_max_tokens == 99
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()
    assert script["judge_base_url"] == "local"  # the run's recorded settings are not changed


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_evaluate_py_has_the_shared_flags(recipe: str, tmp_path, capsys):
    evaluate = load_recipe_module(recipe, "evaluate")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert all(flag in shown for flag in SHARED_FLAGS), shown
    assert not [flag for flag in HIDDEN_FLAGS if f"{flag} " in shown or f"{flag}\n" in shown], shown
    assert "-" not in "".join(word for word in shown.split() if word.startswith("--")).replace("--", ""), shown
    # A bad count stops at the command line, before the run is even looked at (the folder does not exist).
    with pytest.raises(ConfigError, match="argument --batch_size: must be >= 1, got 0"):
        evaluate.main([str(tmp_path / "nosuch"), "--batch_size", "0"])
    # The old data flags are accepted: the run folder is the next thing checked.
    old = ["--max_per_config", "1"] if recipe == "mmmg" else ["--data_file", "x.jsonl"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        evaluate.main([str(tmp_path / "nosuch"), *old])
