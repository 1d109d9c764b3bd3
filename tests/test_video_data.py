"""Video data: the synthetic sample (sample.py), build_dataset columns and lazy frames, validation, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, load_recipe_module
from PIL import Image

from core.data.records import DataError
from core.data.video import sample_frame_indices

D = load_recipe_module("video", "data")
S = load_recipe_module("video", "sample")
R = load_recipe_module("video", "rewards")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    S.make_sample(out, num_samples=9, num_eval=3, seed=0)
    return out


def record(row_id: str, video: str, answer: str = "<answer>(1) a (2) b</answer>", **extra) -> dict:
    return {
        "id": row_id,
        "conversations": [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": answer}],
        "video": video,
        **extra,
    }


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


# ------------------------------------------------------------------------------------------------------ sample.py


def test_make_sample_writes_the_original_record_format(sample: Path) -> None:
    train = json.loads((sample / "train.json").read_text())
    assert [r["id"] for r in train] == [f"train-{i:04d}" for i in range(6)]
    assert len(json.loads((sample / "eval.json").read_text())) == 3
    for rec in train:
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<video>\n")
        assert gpt["from"] == "gpt" and gpt["value"].startswith("<answer>(1) ") and gpt["value"].endswith("</answer>")
        actions = R.parse_actions(gpt["value"])
        assert 2 <= len(actions) <= 3 and len(set(actions)) == len(actions)
        assert all(a.startswith("the ") for a in actions)
        assert (sample / rec["video"]).is_file() and rec["video"].endswith(".mp4")
        assert 16 <= rec["meta"]["frame_cnts"] <= 32
        assert rec["meta"] | {"frame_cnts": 0} == {
            "frame_cnts": 0,
            "min_frames": 4,
            "max_frames": 16,
            "dynamic_sample": True,
        }
    assert json.loads((sample / "sample.json").read_text())["seed"] == 0


def test_make_sample_is_deterministic(sample: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    S.make_sample(again, num_samples=9, num_eval=3, seed=0)
    files = sorted(p.relative_to(sample) for p in sample.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((sample / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / "other"
    S.make_sample(other, num_samples=9, num_eval=3, seed=1)
    assert (other / "train.json").read_text() != (sample / "train.json").read_text()


def test_make_sample_is_idempotent_and_never_overwrites_user_files(tmp_path: Path) -> None:
    out = tmp_path / "s"
    S.make_sample(out, num_samples=3, num_eval=1, seed=0)
    stamp = (out / "train.json").stat().st_mtime_ns
    S.make_sample(out, num_samples=3, num_eval=1, seed=0)  # same request: nothing rewritten
    assert (out / "train.json").stat().st_mtime_ns == stamp
    S.make_sample(out, num_samples=4, num_eval=1, seed=0)  # a new request over our own files: regenerated
    assert len(json.loads((out / "train.json").read_text())) == 3

    user = tmp_path / "user"
    user.mkdir()
    (user / "train.json").write_text("[]")
    with pytest.raises(FileExistsError, match="not written by sample.py"):
        S.make_sample(user, num_samples=3, num_eval=1)
    assert (user / "train.json").read_text() == "[]" and not (user / "videos").exists()

    clips = tmp_path / "clips"
    (clips / "videos").mkdir(parents=True)
    (clips / "videos" / "train-0001.mp4").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="train-0001.mp4"):
        S.make_sample(clips, num_samples=3, num_eval=1)
    assert (clips / "videos" / "train-0001.mp4").read_bytes() == b"mine"


# -------------------------------------------------------------------------------------------------- build_dataset


def test_build_dataset_round_trip_from_sample(sample: Path) -> None:
    dataset = D.build_dataset(sample / "train.json")
    assert len(dataset) == 6
    assert set(dataset.column_names) == {"prompt", "video", "frame_indices", "video_fps", "solution", "actions", "id"}
    records = json.loads((sample / "train.json").read_text())
    for row, rec in zip(dataset, records, strict=True):
        user = row["prompt"][-1]
        assert user["role"] == "user" and user["content"][0]["type"] == "video"
        text = user["content"][1]["text"]
        assert "<video>" not in text and text.endswith(D.PROMPT_SUFFIX)
        assert text == D.build_prompt_text(rec["conversations"][0]["value"])
        frames = row["video"]
        assert isinstance(frames, list) and all(isinstance(f, Image.Image) and f.mode == "RGB" for f in frames)
        total = rec["meta"]["frame_cnts"]
        # qwen-vl-utils' rule: 2 frames per second of the 8 fps clip, within [4, 16], floored to even
        indices = sample_frame_indices(total, 4, 16, fps=8.0)
        assert row["frame_indices"] == indices and len(frames) == len(indices) == max(4, total // 8 * 2)
        assert row["video_fps"] == pytest.approx(len(indices) / total * 8)
        assert row["solution"] == rec["conversations"][1]["value"]
        assert row["actions"] == R.parse_actions(rec["conversations"][1]["value"])
        assert row["id"] == rec["id"]
    # the truth scores 1.0 against itself through the recipe's reward
    assert R.accuracy_reward(dataset["solution"], actions=list(dataset["actions"])) == [1.0] * 6


def test_frames_are_decoded_lazily_through_indexing_and_a_dataloader(sample: Path) -> None:
    dataset = D.build_dataset(sample / "eval.json", min_pixels_per_frame=784, max_pixels_per_frame=2000)
    paths = dataset.data.column("video").to_pylist()
    assert all(isinstance(p, str) and Path(p).is_absolute() and Path(p).is_file() for p in paths)
    assert dataset.format["type"] == "custom"
    row = dataset[1]
    assert all(isinstance(f, Image.Image) and f.width * f.height <= 2000 for f in row["video"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=lambda batch: batch)
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 1]
    for item in (item for batch in batches for item in batch):
        assert len(item["video"]) == len(item["frame_indices"])
        assert all(isinstance(f, Image.Image) for f in item["video"])


def test_meta_overrides_target_fps_and_system_prompt(sample: Path, tmp_path: Path) -> None:
    clip = str(sample / "videos" / "train-0000.mp4")
    total = json.loads((sample / "train.json").read_text())[0]["meta"]["frame_cnts"]
    rows = [
        record("default", clip),
        record("narrow", clip, meta={"min_frames": 2, "max_frames": 5}),
        record("fixed", clip, meta={"dynamic_sample": False}),
    ]
    path = write_json(tmp_path / "d.json", rows)
    dataset = D.build_dataset(path, min_frames=4, max_frames=8, system_prompt="You watch videos.")
    at_2fps = len(sample_frame_indices(total, 4, 8, fps=8.0))
    # meta [2, 5] is clamped into the config's [4, 8]: [4, 5] -> 4; dynamic_sample false: max_frames
    assert [len(i) for i in dataset["frame_indices"]] == [at_2fps, 4, 8]
    assert dataset[0]["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "You watch videos."}]}
    # fps: clips are 8 fps, so 1 frame per second gives duration-many frames (dynamic rows only)
    by_rate = D.build_dataset(path, min_frames=2, max_frames=16, fps=1.0)
    expected = len(sample_frame_indices(total, 2, 16, fps=8.0, target_fps=1.0))
    assert [len(i) for i in by_rate["frame_indices"]] == [expected, min(expected, 4), 16]
    with pytest.raises(ValueError, match="fps must be a positive number"):
        D.build_dataset(path, fps=0)
    with pytest.raises(ValueError, match="min_frames"):
        D.build_dataset(path, min_frames=9, max_frames=8)


def test_build_dataset_reports_every_problem_at_once(sample: Path, tmp_path: Path) -> None:
    good = str(sample / "videos" / "train-0000.mp4")
    (tmp_path / "broken.mp4").write_text("not a video")
    rows = [
        record("ok", good),
        {"id": "no-conv", "video": good},
        {"id": "no-human", "conversations": [{"from": "gpt", "value": "<answer>(1) a</answer>"}], "video": good},
        record("no-marker", good)
        | {"conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "<answer>(1) a</answer>"}]},
        record("no-gpt", good) | {"conversations": [{"from": "human", "value": "<video> What?"}]},
        record("no-actions", good, answer="<answer>a then b</answer>"),
        record("bad-meta", good, meta={"min_frames": 8, "max_frames": 2}),
        record("bad-meta-type", good, meta={"max_frames": "16", "dynamic_sample": "yes"}),
        record("missing", "nowhere.mp4"),
        record("broken", "broken.mp4"),
        record("ok", good),
    ]
    path = write_json(tmp_path / "bad.json", rows)
    with pytest.raises(DataError) as info:
        D.build_dataset(path)
    problems = info.value.problems
    expected = [
        "row 1 (id 'no-conv'): missing 'conversations'",
        "row 2 (id 'no-human'): no human turn",
        "row 3 (id 'no-marker'): the human turn has no '<video>' marker",
        "row 4 (id 'no-gpt'): no gpt answer",
        "row 5 (id 'no-actions'): the gpt answer has no actions",
        "row 6 (id 'bad-meta'): meta.min_frames (8) > meta.max_frames (2)",
        "row 7 (id 'bad-meta-type'): meta.max_frames must be a positive integer",
        "row 7 (id 'bad-meta-type'): meta.dynamic_sample must be true or false",
        f"row 8 (id 'missing'): video 'nowhere.mp4' -> {tmp_path.absolute()}/nowhere.mp4: file not found",
        f"row 9 (id 'broken'): video 'broken.mp4' -> {tmp_path.absolute()}/broken.mp4: cannot decode",
        "duplicate id 'ok' in rows 0, 10",
    ]
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)
    assert str(path) in str(info.value)


def test_build_dataset_resolves_videos_against_video_root(sample: Path, tmp_path: Path) -> None:
    path = write_json(tmp_path / "rel.json", [record("a", "videos/train-0001.mp4")])
    with pytest.raises(DataError, match="file not found"):
        D.build_dataset(path)  # default root: the data file's folder
    assert D.build_dataset(path, video_root=sample)[0]["id"] == "a"


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_sample_then_check(tmp_path: Path) -> None:
    recipe = REPO_ROOT / "recipes" / "video"
    out = tmp_path / "cli"
    made = subprocess.run(
        [sys.executable, str(recipe / "sample.py"), str(out), "--num_samples", "3", "--num_eval", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "train: cli/train.json (2 rows)" in made.stdout and (out / "videos" / "train-0001.mp4").is_file()
    (out / "videos" / "train-0001.mp4").write_bytes(b"corrupt")
    checked = subprocess.run(
        [sys.executable, str(recipe / "data.py"), "--check", str(out / "train.json")], capture_output=True, text=True
    )
    assert checked.returncode == 2
    assert "1 problem(s)" in checked.stderr and "row 1 (id 'train-0001')" in checked.stderr
    ok = subprocess.run(
        [sys.executable, str(recipe / "data.py"), "--check", "eval.json", "--video-root", str(out)],  # old spelling
        capture_output=True,
        text=True,
        cwd=out,
    )
    assert ok.returncode == 0 and ok.stdout == "OK: eval.json: 1 rows\n", ok.stderr
