"""Each data file's relative media paths resolve from that file's own folder (unless images_root / video_root is set),
in training as in evaluation: an eval file kept in another folder than the train file finds its own images/clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.data.records import DataError, load_records
from core.training.config import VLMModelConfig
from core.training.models import load_processor
from tests.helpers import load_recipe_module


def move_eval_split(sample: Path, eval_dir: Path, eval_name: str, media_key: str) -> list[str]:
    """Move the eval file and the media only it uses from `sample` to `eval_dir`; returns the moved relative paths."""
    records = load_records(sample / eval_name)
    train_media = {r[media_key] for r in load_records(sample / eval_name.replace("eval", "train"))}
    moved = sorted({r[media_key] for r in records} - train_media)
    assert moved, "the sample's eval split must have media of its own"
    for relative in moved:
        (eval_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(sample / relative, eval_dir / relative)
    shutil.move(sample / eval_name, eval_dir / eval_name)
    return moved


def test_grounding_eval_file_images_resolve_from_its_own_folder(tmp_path):
    train = load_recipe_module("grounding", "train")
    sample, eval_dir = tmp_path / "train_data", tmp_path / "eval_data"
    load_recipe_module("grounding", "sample").make_sample(sample, num_samples=7, num_eval=3, seed=0)
    moved = move_eval_split(sample, eval_dir, "eval.jsonl", "image")
    processor = load_processor(VLMModelConfig(model_name_or_path="tiny:qwen2_5_vl"))

    args = train.ScriptArguments(
        dataset_name=str(sample / "train.jsonl"), eval_dataset_name=str(eval_dir / "eval.jsonl")
    )
    train_dataset, eval_dataset = train.build_datasets(args, processor)
    assert len(train_dataset) == 4 and len(eval_dataset) == 3
    first = json.loads((eval_dir / "eval.jsonl").read_text().splitlines()[0])
    assert eval_dataset[0]["id"] == first["id"] and eval_dataset[0]["image"].mode == "RGB"  # read from eval_data/

    # images_root, when set, still applies to both files: here it names the train folder, which lacks the eval images.
    args.images_root = str(sample)
    with pytest.raises(DataError) as err:
        train.build_datasets(args, processor)
    assert str(eval_dir / "eval.jsonl") in str(err.value) and Path(moved[0]).name in str(err.value)


def test_video_eval_file_clips_resolve_from_their_own_folder(tmp_path):
    train = load_recipe_module("video", "train")
    sample, eval_dir = tmp_path / "train_data", tmp_path / "eval_data"
    load_recipe_module("video", "sample").make_sample(sample, num_samples=4, num_eval=2, seed=0)
    moved = move_eval_split(sample, eval_dir, "eval.json", "video")

    args = train.ScriptArguments(dataset_name=str(sample / "train.json"), eval_dataset_name=str(eval_dir / "eval.json"))
    train_dataset, eval_dataset = train.build_datasets(args)
    assert len(train_dataset) == 2 and len(eval_dataset) == 2
    stored = eval_dataset.data.column("video").to_pylist()  # the table keeps each clip's absolute path
    assert stored == [str((eval_dir / relative).resolve()) for relative in moved]

    args.video_root = str(sample)
    with pytest.raises(DataError) as err:
        train.build_datasets(args)
    assert Path(moved[0]).name in str(err.value)
