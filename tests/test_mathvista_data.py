"""MathVista data: loading (hub-layout folder, GitHub JSON, save_to_disk), validation, prompts, the sample, the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from core.data.records import DataError
from tests.helpers import REPO_ROOT, load_recipe_module
from tests.image_fixtures import gradient_16bit, palette_with_transparency, transparent_with_black_square

D = load_recipe_module("mathvista", "data")
S = load_recipe_module("mathvista", "sample")
RewardConfig = D.RewardConfig

MATHVISTA_COLUMNS = {
    "pid",
    "question",
    "image",
    "decoded_image",
    "choices",
    "unit",
    "precision",
    "answer",
    "question_type",
    "answer_type",
    "metadata",
    "query",
}
OUTPUT_COLUMNS = {
    "prompt",
    "image",
    "pid",
    "question",
    "answer",
    "choices",
    "question_type",
    "answer_type",
    "precision",
    "unit",
    "task",
    "grade",
    "category",
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mathvista") / "sample"
    assert S.make_sample(out, num_samples=12, seed=0)["dataset"] == out  # 12 rows: every question template once
    return out


def _png(path: Path, size: tuple[int, int] = (60, 40), mode: str = "RGB", colour: tuple = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def _row(pid: str, **overrides: object) -> dict:
    """A valid GitHub-release-style row (free-form integer) with the image `images/<pid>.png`."""
    row = {
        "pid": pid,
        "question": "How many bars are there?",
        "image": f"images/{pid}.png",
        "choices": None,
        "unit": None,
        "precision": None,
        "answer": "3",
        "question_type": "free_form",
        "answer_type": "integer",
        "metadata": {
            "task": "figure question answering",
            "grade": "elementary school",
            "category": "math-targeted-vqa",
        },
        "query": "Question: How many bars are there?",
    }
    row.update(overrides)
    return row


# --------------------------------------------------------------------------------------------------------- sample.py


def test_make_sample_is_deterministic_per_seed(tmp_path: Path) -> None:
    first, second, other = (S.make_sample(tmp_path / name, 4, seed=s) for name, s in (("a", 7), ("b", 7), ("c", 8)))
    data = [written["testmini"].read_bytes() for written in (first, second, other)]
    assert data[0] == data[1]
    assert data[0] != data[2]


def test_make_sample_is_idempotent_and_never_overwrites_user_data(tmp_path: Path) -> None:
    written = S.make_sample(tmp_path / "s", num_samples=2, seed=3)
    out, file = written["dataset"], written["testmini"]
    assert file == S.sample_data_file(out)
    stamp = file.stat().st_mtime_ns
    assert S.make_sample(tmp_path / "s", num_samples=2, seed=3) == written and file.stat().st_mtime_ns == stamp
    S.make_sample(tmp_path / "s", num_samples=3, seed=3)  # another request: its own files are regenerated
    assert len(D.load_split(out)) == 3
    assert json.loads((out / "sample.json").read_text())["n"] == 3

    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    S.sample_data_file(mine).write_bytes(b"my parquet")
    with pytest.raises(FileExistsError, match="not written by sample.py"):
        S.make_sample(mine, num_samples=2)
    assert S.sample_data_file(mine).read_bytes() == b"my parquet"
    assert not (mine / "sample.json").exists()


def test_sample_has_mathvista_columns_and_varied_metadata(sample: Path) -> None:
    raw = D.load_split(sample, "testmini")
    assert MATHVISTA_COLUMNS <= set(raw.column_names)
    assert isinstance(raw.features["decoded_image"], datasets.Image)
    assert raw.features["precision"] == datasets.Value("float64")
    row = raw[0]
    assert isinstance(row["decoded_image"], Image.Image) and row["decoded_image"].size == (320, 240)
    assert row["metadata"]["img_width"] == 320 and row["metadata"]["img_height"] == 240
    assert row["query"].startswith("Hint: ") and f"Question: {row['question']}" in row["query"]
    for key in ("task", "grade", "category"):
        assert len({r["metadata"][key] for r in raw}) >= 2, key
    assert set(raw["question_type"]) == {"multi_choice", "free_form"}
    assert set(raw["answer_type"]) == {"integer", "float", "text", "list"}
    assert {p for p in raw["precision"] if p is not None} == {1.0, 2.0}
    assert any(u is not None for u in raw["unit"]) and any(u is None for u in raw["unit"])


def test_sample_answers_follow_from_the_drawn_data(sample: Path) -> None:
    raw = D.load_split(sample)
    templates = set()
    for row in raw:
        chart = json.loads(row["chart"])
        labels, values, template = chart["labels"], chart["values"], chart["template"]
        templates.add((chart["kind"], template))
        value = dict(zip(labels, values, strict=True))
        named = [label for label in labels if f" {label} " in f" {row['question'].rstrip('?')} "]
        if template == "tallest":
            expected = str(max(values))
        elif template == "average":
            expected = f"{sum(values) / len(values):.1f}"
        elif template == "list":
            expected = json.dumps(values)
        elif template == "highest":
            expected = labels[int(np.argmax(values))]
        elif template == "lowest_year":
            expected = labels[int(np.argmin(values))]
        elif template == "value_at":
            expected = str(value[named[0]])
        elif template in ("difference", "change", "ratio", "greater", "sum_options"):
            # the question names two labels; order in the question decides the operation
            first, second = sorted(named, key=lambda label: row["question"].index(f" {label}"))
            expected = {
                "difference": str(value[first] - value[second]),
                "change": str(value[first] - value[second]),
                "ratio": f"{value[first] / value[second]:.2f}",
                "greater": "Yes" if value[first] > value[second] else "No",
                "sum_options": str(value[first] + value[second]),
            }[template]
        else:
            raise AssertionError(template)
        assert row["answer"] == expected, (template, row["question"], chart)
        if row["question_type"] == "multi_choice":
            assert row["answer"] in row["choices"] and len(row["choices"]) >= 2
    assert len(templates) == len(S.SAMPLE_TEMPLATES)


def test_sample_bar_heights_are_proportional_to_the_values(sample: Path) -> None:
    raw = D.load_split(sample)
    row = next(r for r in raw if json.loads(r["chart"])["kind"] == "bar")
    values = json.loads(row["chart"])["values"]
    pixels = np.asarray(row["decoded_image"].convert("RGB")).astype(int)
    mask = (np.abs(pixels - np.array(S.BAR_COLOUR)).sum(axis=-1) <= 6).sum(axis=0)  # bar pixels per column
    runs, current = [], []
    for count in mask:
        if count > 0:
            current.append(count)
        elif current:
            runs.append(max(current))
            current = []
    assert len(runs) == len(values)
    assert np.allclose(np.array(runs) / max(runs), np.array(values) / max(values), atol=0.03)


def test_sample_folder_loads_with_datasets_itself(sample: Path, tmp_path: Path) -> None:
    # The layout is the hub's: datasets finds the custom split name from the file name, offline.
    loaded = datasets.load_dataset(str(sample), split="testmini", cache_dir=str(tmp_path / "cache"))
    ours = D.load_split(sample, "testmini")
    assert loaded["pid"] == ours["pid"] and loaded["answer"] == ours["answer"]
    assert isinstance(loaded.features["decoded_image"], datasets.Image)


# ----------------------------------------------------------------------------------------------------------- loading


def test_rows_keep_16bit_levels_and_put_transparency_on_white(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    gradient_16bit(tmp_path / "images" / "1.png", width=400)  # under image_size: not resized, levels countable
    transparent_with_black_square(tmp_path / "images" / "2.png")
    palette_with_transparency(tmp_path / "images" / "3.png")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(_row(pid)) + "\n" for pid in ("1", "2", "3")))
    rows = {row["pid"]: row["image"] for row in D.build_dataset(tmp_path / "rows.jsonl")}
    grey = np.asarray(rows["1"])
    assert len(np.unique(grey[..., 0])) > 200 and grey[0, 0, 0] == 0 and grey[0, -1, 0] == 255  # was 5 levels
    assert rows["2"].getpixel((0, 0)) == (255, 255, 255) and rows["2"].getpixel((15, 15)) == (0, 0, 0)
    assert rows["3"].getpixel((0, 0)) == (255, 255, 255) and rows["3"].getpixel((10, 10)) == (255, 0, 0)


def test_load_split_from_github_json_dict_keyed_by_pid(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "1.png", size=(1000, 500), mode="RGBA", colour=(0, 0, 0, 0))  # transparent, large
    _png(tmp_path / "images" / "2.png")
    second = _row(
        "2",
        question="Which colour is the square?",
        question_type="multi_choice",
        answer_type="text",
        choices=["red", "blue"],
        answer="red",
    )
    second.pop("pid")  # the key names it
    content = {"1": _row("1", answer=3, unit="cm"), "2": second}  # a numeric answer, as hand-written JSON might hold
    (tmp_path / "testmini.json").write_text(json.dumps(content))

    raw = D.load_split(str(tmp_path / "testmini.json"))
    assert raw["pid"] == ["1", "2"] and raw["answer"] == ["3", "red"]
    assert raw["image"][0] == "images/1.png"  # as written, like the hub's column
    assert raw.cast_column("decoded_image", datasets.Image(decode=False))[0]["decoded_image"]["path"] == str(
        (tmp_path / "images" / "1.png").absolute()
    )
    assert raw[1]["decoded_image"].size == (60, 40)

    built = D.build_dataset(tmp_path / "testmini.json")
    assert built["pid"] == ["1", "2"]
    big = built[0]["image"]
    assert big.mode == "RGB" and big.size == (512, 256)  # longest side 512, aspect kept
    assert big.getpixel((10, 10)) == (255, 255, 255)  # transparency flattened onto white, not black
    assert built[1]["image"].size == (60, 40)  # never upscaled
    assert built[1]["choices"] == ["red", "blue"] and built[0]["choices"] is None
    assert built[0]["unit"] == "cm" and built[1]["unit"] is None

    # a list of rows and JSONL load the same way
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(_row(p)) + "\n" for p in ("1", "2")))
    assert D.load_split(tmp_path / "rows.jsonl")["pid"] == ["1", "2"]


def test_unknown_split_names_the_available_ones(sample: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match="no split 'train'; available: testmini"):
        D.load_split(sample, "train")

    saved = tmp_path / "saved"
    datasets.DatasetDict({"testmini": D.load_split(sample), "test": D.load_split(sample)}).save_to_disk(str(saved))
    assert D.load_split(saved, "test")["pid"] == D.load_split(sample)["pid"]
    with pytest.raises(DataError, match="no split 'dev'; available: testmini, test"):
        D.load_split(saved, "dev")

    (tmp_path / "testmini.json").write_text(json.dumps({"1": _row("1", metadata={"split": "testmini"})}))
    with pytest.raises(DataError, match="no split 'test'; available: testmini"):
        D.load_split(tmp_path / "testmini.json", "test")

    def fake_hub(name: str, split: str) -> None:
        raise ValueError(f"Unknown split \"{split}\". Should be one of ['test', 'testmini'].")

    monkeypatch.setattr(D.datasets, "load_dataset", fake_hub)
    with pytest.raises(DataError, match=r"no split 'val'.*Should be one of \['test', 'testmini'\]"):
        D.load_split("AI4Math/MathVista", "val")
    with pytest.raises(DataError, match="not found"):  # a path that does not exist is not sent to the hub
        D.load_split(str(tmp_path / "nowhere" / "data"), "testmini")


# ----------------------------------------------------------------------------------------------------- build_dataset


def test_build_dataset_columns_and_types(sample: Path) -> None:
    dataset = D.build_dataset(sample, image_size=200, system_prompt="You solve visual math.")
    assert set(dataset.column_names) == OUTPUT_COLUMNS and len(dataset) == 12
    assert dataset.features["precision"] == datasets.Value("int64")
    assert dataset.features["choices"] == datasets.List(datasets.Value("string"))
    raw = D.load_split(sample)
    for row, source in zip(dataset, raw, strict=True):
        image = row["image"]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert image.size == (200, 150)  # 320x240 scaled to a longest side of 200
        assert row["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "You solve visual math."}]}
        user = row["prompt"][-1]
        assert user["role"] == "user" and user["content"][0]["type"] == "image"
        assert user["content"][1]["text"] == D.build_prompt_text(
            row["question"],
            question_type=row["question_type"],
            answer_type=row["answer_type"],
            choices=row["choices"],
            precision=row["precision"],
            unit=row["unit"],
        )
        assert row["pid"] == source["pid"] and row["answer"] == source["answer"]
        assert (row["task"], row["grade"], row["category"]) == tuple(
            source["metadata"][k] for k in ("task", "grade", "category")
        )
        assert row["unit"] == source["unit"]
        if source["question_type"] == "free_form":
            assert row["choices"] is None  # None survives Arrow (not [])
        else:
            assert row["choices"] == source["choices"]
        if source["precision"] is None:
            assert row["precision"] is None
        else:
            assert isinstance(row["precision"], int) and row["precision"] == source["precision"]


def test_build_dataset_slices_with_start_and_max_samples(sample: Path) -> None:
    assert D.build_dataset(sample, start=3, max_samples=4)["pid"] == ["4", "5", "6", "7"]
    assert D.build_dataset(sample, start=10, max_samples=50)["pid"] == ["11", "12"]
    only = D.build_dataset(sample, max_samples=1)  # a free-form row only: types still declared
    assert only[0]["choices"] is None and only[0]["precision"] is None
    assert only.features["choices"] == datasets.List(datasets.Value("string"))
    with pytest.raises(DataError, match="start 12 is past the end of the split"):
        D.build_dataset(sample, start=12)


def test_build_dataset_reports_every_problem_with_row_and_pid(tmp_path: Path) -> None:
    for pid in ("ok", "dup", "empty"):
        _png(tmp_path / "images" / f"{pid}.png")
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ok = "images/ok.png"
    mc = {"question_type": "multi_choice", "answer_type": "text", "choices": ["red", "blue"], "answer": "red"}
    rows = [
        _row("ok", image=ok),
        _row("blank", image=ok, question="   "),
        _row("qtype", image=ok, question_type="essay"),
        _row("atype", image=ok, answer_type="fraction"),
        _row("onechoice", image=ok, **{**mc, "choices": ["red"]}),
        _row("nochoices", image=ok, **{**mc, "choices": None}),
        _row("notachoice", image=ok, **{**mc, "answer": "green"}),
        _row("floatword", image=ok, answer_type="float", answer="abc", precision=1.0),
        _row("noprecision", image=ok, answer_type="float", answer="1.5"),
        _row("halfprecision", image=ok, answer_type="float", answer="1.5", precision=1.5),
        _row("negprecision", image=ok, answer_type="float", answer="1.5", precision=-1.0),
        _row("intfloat", image=ok, answer="2.5"),
        _row("badlist", image=ok, answer_type="list", answer="two and three"),
        _row("nofile", image="images/missing.png"),
        _row("corrupt", image="images/corrupt.png"),
        _row("noimage", image=None),
        _row("twice", image=ok, question="", answer=""),
        _row("ok", image=ok),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as info:
        D.build_dataset(path)
    message, problems = str(info.value), info.value.problems
    assert message.startswith(f"{len(problems)} problem(s) in {path} (split testmini):")
    expected = [
        "row 1 (id 'blank'): missing or empty question",
        "row 2 (id 'qtype'): question_type must be one of multi_choice, free_form, got 'essay'",
        "row 3 (id 'atype'): answer_type must be one of integer, float, text, list, got 'fraction'",
        "row 4 (id 'onechoice'): multi_choice needs at least 2 choices",
        "row 5 (id 'nochoices'): multi_choice needs at least 2 choices, got None",
        "row 6 (id 'notachoice'): answer 'green' is not one of the choices ['red', 'blue']",
        "row 7 (id 'floatword'): answer_type float but answer 'abc' is not a number",
        "row 8 (id 'noprecision'): answer_type float needs a precision",
        "row 9 (id 'halfprecision'): precision must be a non-negative whole number, got 1.5",
        "row 10 (id 'negprecision'): precision must be a non-negative whole number, got -1.0",
        "row 11 (id 'intfloat'): answer_type integer but answer '2.5' is not an integer",
        "row 12 (id 'badlist'): answer_type list but answer 'two and three' does not parse as a list",
        f"row 13 (id 'nofile'): image 'images/missing.png' -> {tmp_path / 'images' / 'missing.png'}: file not found",
        # the corrupt file is named, as the user wrote it and resolved (issue 15, item 5)
        f"row 14 (id 'corrupt'): image 'images/corrupt.png' -> {tmp_path / 'images' / 'corrupt.png'}: cannot decode",
        "row 15 (id 'noimage'): missing image",
        "row 16 (id 'twice'): missing or empty question",
        "row 16 (id 'twice'): missing or empty answer",
        "duplicate pid 'ok' in rows 0, 17",
    ]
    for fragment in expected:
        assert fragment in message, fragment
    assert len(problems) == 18


def test_build_dataset_refuses_answers_the_correctness_reward_cannot_match_to_themselves(tmp_path: Path) -> None:
    # Each of these passes the format checks, yet correctness_reward scores its own answer 0 against itself: such a
    # row could never pay, whatever the model writes. All are reported, by row and pid, before training.
    _png(tmp_path / "images" / "x.png")
    image = "images/x.png"
    rows = [
        _row("flat", image=image, answer_type="list", answer="[1, 2.5, 'a']"),  # a flat list scores: kept
        _row("nested", image=image, answer_type="list", answer="[[1, 2], [3, 4]]"),
        _row("emptylist", image=image, answer_type="list", answer="[]"),
        _row("stars", image=image, answer_type="text", answer="**"),  # nothing left once markdown is removed
        # multiple choice is asked for by letter: option texts that read as letters still score ("A" is option B)
        _row("letters", image=image, question_type="multi_choice", answer_type="text", choices=["B", "A"], answer="A"),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as info:
        D.build_dataset(path)
    assert info.value.problems == [
        f"row {index} (id {pid!r}): answer {answer!r} can never be rewarded: correctness_reward does not read it as "
        f"a list answer, so not even the answer itself scores as correct{why}"
        for index, pid, answer, why in (
            (1, "nested", "[[1, 2], [3, 4]]", " (a list answer holds numbers or strings, one level deep)"),
            (2, "emptylist", "[]", " (a list answer holds numbers or strings, one level deep)"),
        )
    ] + [
        "row 3 (id 'stars'): answer '**' can never be rewarded: correctness_reward does not read it as a text answer, "
        "so not even the answer itself scores as correct"
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in (rows[0], rows[4])))
    assert D.build_dataset(path)["answer"] == ["[1, 2.5, 'a']", "A"]


def test_build_dataset_reports_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"pid": "1", "question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['answer', 'answer_type', 'question_type'"):
        D.build_dataset(tmp_path / "d.jsonl")


# ------------------------------------------------------------------------------------------------------------ prompt


def test_prompt_text_per_answer_type() -> None:
    def text(**kwargs: object) -> str:
        return D.build_prompt_text("What is x?", **{"question_type": "free_form", **kwargs})

    integer = text(answer_type="integer")
    assert integer.splitlines()[0] == "Hint: The answer is an integer, e.g. 1, 2, 3."
    assert integer.splitlines()[1] == "Question: What is x?"
    assert "Choices:" not in integer and "Unit" not in integer
    assert "one decimal place, e.g. 1.2." in text(answer_type="float", precision=1)
    assert "two decimal places, e.g. 1.23." in text(answer_type="float", precision=2)
    assert "4 decimal places, e.g. 1.2345." in text(answer_type="float", precision=4)
    assert "a Python list, e.g. [1, 2, 3]" in text(answer_type="list")
    assert "a word or a short phrase" in text(answer_type="text")

    choice = D.build_prompt_text(
        "Which is biggest?", question_type="multi_choice", answer_type="text", choices=["cat", "dog", "ant"]
    )
    lines = choice.splitlines()
    assert lines[0] == "Hint: Answer with the letter of the correct option, e.g. A, B, C, D."
    assert lines[2:6] == ["Choices:", "(A) cat", "(B) dog", "(C) ant"]
    assert "only the letter of the correct option" in lines[-1]

    assert "(Unit: cm)" in text(answer_type="integer", unit="cm")
    assert text(answer_type="integer", unit="%").splitlines()[2] == "(Unit: %)"
    mentioned = D.build_prompt_text(
        "What is the length in cm?", question_type="free_form", answer_type="integer", unit="cm"
    )
    assert "Unit" not in mentioned

    default = text(answer_type="integer").splitlines()[-1]
    assert "<REASONING>" in default and "</REASONING>" in default and "<SOLUTION>" in default
    custom = RewardConfig(reasoning_start="<think>", reasoning_end="</think>", solution_start="[[", solution_end="]]")
    last = text(answer_type="integer", reward_cfg=custom).splitlines()[-1]
    assert "between <think> and </think>" in last and "between [[ and ]]" in last
    assert "REASONING" not in last and "SOLUTION" not in last


# --------------------------------------------------------------------------------------------------------------- CLI


def test_cli_check_in_process(sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert D.main(["--check", str(sample), "--split", "testmini", "--max_samples", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {sample}: 2 rows (split testmini: ")

    _png(tmp_path / "images" / "1.png")
    (tmp_path / "bad.json").write_text(json.dumps({"1": _row("1", answer="many")}))
    assert D.main(["--check", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "row 0 (id '1'): answer_type integer but answer 'many' is not an integer" in err
    assert D.main(["--check", str(sample), "--split", "train"]) == 2
    assert "available: testmini" in capsys.readouterr().err


def test_cli_runs_as_a_script(sample: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "mathvista" / "data.py"), "--check", str(sample)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {sample}: 12 rows (split testmini: ")


def test_image_bytes_are_png_for_charts(sample: Path) -> None:
    stored = D.build_dataset(sample, max_samples=1).cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert stored["bytes"].startswith(b"\x89PNG") and Image.open(io.BytesIO(stored["bytes"])).size == (320, 240)
