"""Complex-Edit loading: splits, complexity levels, the offline sample's shape, errors named by row."""

from __future__ import annotations

import datasets
import pytest
from PIL import Image

from core.data.records import DataError
from tests.helpers import load_recipe_module

D = load_recipe_module("image_edit", "data")
S = load_recipe_module("image_edit", "sample")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return S.make_sample(tmp_path_factory.mktemp("ce") / "sample", num_samples=5, num_syn=2, seed=1)["dataset"]


def test_sample_has_complex_edit_shape(sample):
    dd = datasets.load_from_disk(str(sample))
    assert set(dd) == {"test_real", "test_syn"} and len(dd["test_real"]) == 3 and len(dd["test_syn"]) == 2
    row = dd["test_real"][0]
    assert isinstance(row["image"], Image.Image)
    levels = row["edit"]["compound"]
    assert [lvl["complexity"] for lvl in levels] == list(range(1, 9))
    # level k merges atomic edits 1..k
    atoms = row["edit"]["atom"]
    assert levels[0]["compound_instruction"].lower().startswith(atoms[0].lower())
    assert all(atoms[k].lower() in levels[k]["compound_instruction"].lower() for k in range(8))
    assert atoms[3].lower() not in levels[2]["compound_instruction"].lower()


def test_build_dataset_picks_splits_and_levels(sample):
    ds = D.build_dataset(str(sample), "SYS", splits=["test_real", "test_syn"], complexities=[1, 8])
    assert len(ds) == (3 + 2) * 2
    assert ds["id"][:2] == ["test_real-00000-c1", "test_real-00000-c8"]
    assert ds["complexity"][:2] == [1, 8]
    prompt = ds[0]["prompt"]
    assert prompt[0]["role"] == "system" and prompt[0]["content"][0]["text"] == "SYS"
    assert [p["type"] for p in prompt[1]["content"]] == ["image", "text"]
    assert prompt[1]["content"][1]["text"] == ds[0]["instruction"]
    assert ds[0]["image"].mode == "RGB"
    assert len(D.build_dataset(str(sample), "SYS", complexities=[2], max_samples=2)) == 2


def test_errors_are_clear(sample, tmp_path):
    with pytest.raises(ValueError, match="test_val"):
        D.build_dataset(str(sample), "SYS", splits=["test_val"])
    with pytest.raises(ValueError, match="1..8"):
        D.build_dataset(str(sample), "SYS", complexities=[9])
    with pytest.raises(DataError, match="no dataset_dict.json"):
        D.build_dataset(str(tmp_path), "SYS")
    dd = datasets.load_from_disk(str(sample))
    broken = dd["test_real"].map(
        lambda r, i: {
            "edit": {
                "atom": r["edit"]["atom"],
                "compound": r["edit"]["compound"][:1] if i == 1 else r["edit"]["compound"],
            }
        },
        with_indices=True,
    )
    datasets.DatasetDict({"test_real": broken}).save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(DataError) as err:
        D.build_dataset(str(tmp_path / "broken"), "SYS", complexities=[1, 2, 3])
    assert "test_real-00001-c2: edit has 1 compound levels" in str(err.value)
    assert "test_real-00001-c3" in str(err.value)


def test_make_sample_is_idempotent_and_protects_other_folders(sample, tmp_path):
    stamp = (sample / "sample.json").stat().st_mtime_ns
    assert S.make_sample(sample, num_samples=5, num_syn=2, seed=1)["dataset"] == sample
    assert (sample / "sample.json").stat().st_mtime_ns == stamp
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not written by sample.py"):
        S.make_sample(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
