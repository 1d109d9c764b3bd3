"""MMMG data: config names, the offline sample, build_dataset round trip, every bad row reported."""

from __future__ import annotations

import json

import pytest

from core.data.records import DataError
from tests.helpers import load_recipe_module

D = load_recipe_module("mmmg", "data")
S = load_recipe_module("mmmg", "sample")
P = load_recipe_module("mmmg", "protocol")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return S.make_sample(tmp_path_factory.mktemp("mmmg") / "sample", num_samples=12)["dataset"]


def test_config_names():
    assert len(D.config_names()) == 59
    assert "preschool_Philosophy" not in D.config_names(["preschool"])
    assert D.config_names(["highschool"], ["Math", "Biology"]) == ["highschool_Math", "highschool_Biology"]
    with pytest.raises(ValueError, match=r"unknown level.*'kindergarten'"):
        D.config_names(["kindergarten"], ["Math"])
    with pytest.raises(ValueError, match=r"unknown discipline.*'Alchemy'"):
        D.config_names(["PhD"], ["Alchemy"])
    with pytest.raises(ValueError, match="no MMMG config"):
        D.config_names(["preschool"], ["Philosophy"])


def test_make_sample_is_idempotent_and_protective(sample, tmp_path):
    marker = (sample / "sample.json").read_text()
    assert S.make_sample(sample, num_samples=12)["dataset"] == sample
    assert (sample / "sample.json").read_text() == marker
    assert sorted(p.stem for p in sample.glob("*.jsonl")) == sorted(S.SAMPLE_CONFIGS)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by sample.py"):
        S.make_sample(foreign)
    assert D.main(["--make-sample", str(foreign)]) == 1  # the old spelling runs sample.py, which refuses


def test_sample_spreads_rows_over_the_configs(tmp_path):
    written = S.make_sample(tmp_path / "s", num_samples=7, seed=2)
    assert written["dataset"] == tmp_path / "s"
    counts = {config: len(D.load_mmmg(str(tmp_path / "s"), [config.split("_")[0]])) for config in S.SAMPLE_CONFIGS}
    assert counts == {"primaryschool_Biology": 3, "highschool_Math": 2, "undergraduate_Chemistry": 2}
    assert [len(written[config].read_text().splitlines()) for config in S.SAMPLE_CONFIGS] == [3, 2, 2]


def test_round_trip_columns_and_filters(sample):
    ds = D.build_dataset(str(sample), "SYSTEM")
    assert set(ds.column_names) == {
        "prompt",
        "text",
        "knowledge_graph",
        "annotation",
        "level",
        "discipline",
        "key",
        "id",
    }
    assert len(ds) == 4 * len(S.SAMPLE_CONFIGS)
    row = ds[0]
    assert row["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "SYSTEM"}]}
    assert row["prompt"][1]["role"] == "user"
    assert [part["type"] for part in row["prompt"][1]["content"]] == ["text"]  # text-to-image: no image part
    assert row["prompt"][1]["content"][0]["text"] == row["text"]
    kg = P.parse_kg(row["knowledge_graph"])
    assert 2 <= len(kg["elements"]) <= 4 and 1 <= len(kg["dependencies"]) <= 3
    math = D.build_dataset(str(sample), "S", levels=["highschool"], disciplines=["Math"])
    assert set(math["level"]) == {"highschool"} and set(math["discipline"]) == {"Math"} and len(math) == 4
    bio = D.build_dataset(str(sample), "S", disciplines=["Biology"], max_samples=2)
    assert set(bio["discipline"]) == {"Biology"} and len(bio) == 2
    assert len(set(ds["id"])) == len(ds)
    # explicitly requested config missing from the folder
    with pytest.raises(DataError, match="PhD_History"):
        D.build_dataset(str(sample), "S", levels=["PhD"], disciplines=["History"])
    assert D.main(["--check", str(sample), "--levels", "highschool", "--disciplines", "Math"]) == 0


def test_every_sample_row_scores_one_when_all_yes(sample):
    for row in D.load_mmmg(str(sample)):
        kg = row["kg"]
        assert P.knowledge_fidelity(kg, {k: True for k in [*kg["elements"], *kg["dependencies"]]}) == 1.0


def _write(folder, config, rows):
    folder.mkdir(exist_ok=True)
    (folder / f"{config}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_bad_rows_all_reported(tmp_path):
    good = {"elements": ["a", "b"], "dependencies": ["Causes(a, b)"]}
    rows = [
        {"key": "ok", "prompt": "fine", "Knowledge_Graph": json.dumps(good), "Annotation": ""},
        {"key": "notjson", "prompt": "p", "Knowledge_Graph": "{elements: oops"},
        {"key": "shape", "prompt": "p", "Knowledge_Graph": json.dumps({"elements": "a, b", "dependencies": []})},
        {"key": "dep", "prompt": "p", "Knowledge_Graph": json.dumps({"elements": ["a"], "dependencies": ["a->b"]})},
        {"key": "nokg", "prompt": "p"},
        {"key": "emptytext", "prompt": "  ", "Knowledge_Graph": json.dumps(good)},
    ]
    _write(tmp_path / "bad", "PhD_Math", rows)
    with pytest.raises(DataError) as info:
        D.load_mmmg(str(tmp_path / "bad"), ["PhD"], ["Math"])
    problems = info.value.problems
    assert len(problems) == 5
    for key, needle in [
        ("notjson", "not valid JSON"),
        ("shape", "'elements' must be a list"),
        ("dep", "unparseable dependencies"),
        ("nokg", "no Knowledge_Graph"),
        ("emptytext", "empty"),
    ]:
        assert any(f"PhD_Math-{key}" in p and needle in p for p in problems), (key, problems)


def test_missing_prompt_column_names_available_columns(tmp_path):
    _write(tmp_path / "cols", "PhD_Math", [{"key": "k", "question": "q", "Knowledge_Graph": "{}"}])
    with pytest.raises(DataError, match=r"no prompt column 'prompt'.*'question'"):
        D.load_mmmg(str(tmp_path / "cols"), ["PhD"], ["Math"])
    kg = json.dumps({"elements": ["a"], "dependencies": []})
    _write(tmp_path / "cols2", "PhD_Math", [{"key": "k", "question": "q", "Knowledge_Graph": kg}])
    (row,) = D.load_mmmg(str(tmp_path / "cols2"), ["PhD"], ["Math"], prompt_column="question")
    assert row["text"] == "q" and row["level"] == "PhD" and row["discipline"] == "Math"
