"""image2code rewards: code extraction, the reward per sandbox status, one render per batch shared with a hook."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import load_recipe_module
from PIL import Image, ImageDraw

R = load_recipe_module("image2code", "rewards")


@dataclass
class FakeResult:
    """Same fields as core.rewards.sandbox.RenderResult."""

    status: str
    image: Image.Image | None = None
    error: str = ""
    seconds: float = 0.01


class FakeSandbox:
    """Returns the result queued for each code (by code text) and counts render calls."""

    def __init__(self, results: dict[str, FakeResult]) -> None:
        self.results = results
        self.calls: list[list[str]] = []

    def render(self, codes: list[str]) -> list[FakeResult]:
        self.calls.append(list(codes))
        return [self.results.get(code, FakeResult("runtime_error", error="unknown")) for code in codes]


def _reference() -> Image.Image:
    image = Image.new("RGB", (96, 72), "white")
    ImageDraw.Draw(image).rectangle([20, 20, 60, 50], fill=(30, 90, 200))
    return image


def _fenced(code: str) -> str:
    return f"Here is the code:\n```python\n{code}\n```\nDone."


# ----------------------------------------------------------------------------------------------------- extraction


def test_extract_code_variants() -> None:
    assert R.extract_code("```python\nprint(1)\n```") == "print(1)"
    assert R.extract_code("text\n```\nx = 1\n```\nmore ```\ny = 2\n```") == "x = 1"  # first generic block
    assert R.extract_code("  import matplotlib  \n") == "import matplotlib"  # plain text
    several = "```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n```\nc = 3\n```"
    assert R.extract_code(several) == "b = 2"  # last python block wins over generic ones
    assert R.extract_code("```py\nz = 3\n```") == "z = 3"
    assert R.extract_code("```python\nimport x\nplt.plot(  # truncated") == "import x\nplt.plot(  # truncated"
    messages = [{"role": "assistant", "content": [{"type": "text", "text": _fenced("q = 4")}]}]
    assert R.extract_code(messages) == "q = 4"
    assert R.extract_code(None) == ""


# ----------------------------------------------------------------------------------------------------- formula


def test_reward_per_status() -> None:
    ref = _reference()
    blank = Image.new("RGB", ref.size, "white")
    results = {
        "perfect": FakeResult("ok", ref.copy()),
        "blank": FakeResult("ok", blank),
        "syntax": FakeResult("syntax_error", error="SyntaxError"),
        "runtime": FakeResult("runtime_error", error="ZeroDivisionError"),
        "timeout": FakeResult("timeout"),
        "killed": FakeResult("killed"),
        "noimg": FakeResult("no_image"),
        "ok_without_image": FakeResult("ok", None),
        "weird": FakeResult("exploded"),
    }
    reward = R.Image2CodeReward(FakeSandbox(results), R.RewardConfig())
    assert reward.__name__ == "image2code_reward"
    names = list(results)
    scores = dict(zip(names, reward([_fenced(n) for n in names], image=[ref] * len(names)), strict=True))
    assert scores["perfect"] == pytest.approx(0.3 + 0.7)
    assert scores["blank"] == 0.0  # a single-colour figure: nothing drawn, counts as no_image (see below)
    assert scores["syntax"] == pytest.approx(-1.0)
    assert scores["runtime"] == pytest.approx(-0.5)
    assert scores["timeout"] == pytest.approx(-0.5)
    assert scores["killed"] == pytest.approx(-0.5)
    assert scores["noimg"] == 0.0
    assert scores["ok_without_image"] == 0.0  # counts as no_image
    assert scores["weird"] == pytest.approx(-0.5)  # unknown status counts as runtime_error


def test_blank_figure_counts_as_no_image() -> None:
    """A figure with (almost) nothing drawn on it is an empty answer: no execution credit, no similarity to a blank
    canvas (which is about 0.6 of the maximum on a mostly-white chart). Almost nothing: under 0.1% of the pixels
    differ from the most common colour by more than 8/255 in a channel."""
    ref = _reference()
    one_dot = Image.new("RGB", ref.size, "white")
    one_dot.putpixel((5, 5), (0, 0, 0))
    faint = Image.new("RGB", ref.size, "white")
    ImageDraw.Draw(faint).rectangle([10, 10, 60, 50], fill=(250, 250, 250))  # within 8/255 of white: no ink
    small_mark = Image.new("RGB", ref.size, "white")
    ImageDraw.Draw(small_mark).rectangle([5, 5, 14, 14], fill=(0, 0, 0))  # 100 of 6912 pixels: 1.4% ink
    results = {
        "white": FakeResult("ok", Image.new("RGB", ref.size, "white")),
        "black": FakeResult("ok", Image.new("RGB", ref.size, "black")),
        "transparent": FakeResult("ok", Image.new("RGBA", ref.size, (255, 0, 0, 0))),  # over white: all white
        "one_dot": FakeResult("ok", one_dot),
        "faint": FakeResult("ok", faint),
        "small_mark": FakeResult("ok", small_mark),
        "perfect": FakeResult("ok", ref.copy()),
    }
    config = R.RewardConfig(no_image_penalty=-0.25)
    scores = R.Image2CodeReward(FakeSandbox(results), config)(list(results), image=[ref] * len(results))
    assert scores[:5] == [-0.25] * 5  # scored exactly as no_image, whatever its penalty
    assert 0.3 < scores[5] < 1.0 and scores[6] == pytest.approx(1.0)
    assert [R.effective_status(results[name]) for name in results] == ["no_image"] * 5 + ["ok"] * 2
    assert R.score_result(results["white"], ref, R.RewardConfig()) == (0.0, "no_image", None)
    assert R.ink_fraction(one_dot) == pytest.approx(1 / (96 * 72))
    assert R.ink_fraction(faint) == 0.0 and R.ink_fraction(small_mark) == pytest.approx(100 / (96 * 72))
    inverted = Image.new("RGB", ref.size, "black")  # the dominant colour, not white, is the background
    inverted.putpixel((5, 5), (255, 255, 255))
    assert R.is_blank(inverted) and not R.is_blank(ref)


def test_config_changes_formula() -> None:
    ref = _reference()
    config = R.RewardConfig(
        code_execution_weight=0.5,
        image_similarity_weight=0.5,
        syntax_error_penalty=-2.0,
        timeout_penalty=-0.1,
        no_image_penalty=-0.2,
    )
    results = {
        "a": FakeResult("ok", ref),
        "b": FakeResult("syntax_error"),
        "c": FakeResult("timeout"),
        "d": FakeResult("no_image"),
    }
    reward = R.Image2CodeReward(FakeSandbox(results), config)
    assert reward(list(results), image=[ref] * 4) == pytest.approx([1.0, -2.0, -0.1, -0.2])
    assert config.similarity_weights.ssim == 0.3
    with pytest.raises(ValueError):
        R.RewardConfig(edge_weight=-1)


def test_missing_reference_is_none_and_logs_metrics() -> None:
    ref = _reference()
    results = {"a": FakeResult("ok", ref), "b": FakeResult("syntax_error"), "c": FakeResult("ok", ref)}
    logged: dict[str, float] = {}
    reward = R.Image2CodeReward(FakeSandbox(results))
    scores = reward(["a", "b", "c"], image=[ref, ref, None], log_metric=logged.__setitem__)
    assert scores[:2] == pytest.approx([1.0, -1.0]) and scores[2] is None
    assert logged["image2code/execution_success"] == pytest.approx(0.5)
    assert logged["image2code/status/syntax_error"] == pytest.approx(0.5)
    assert logged["image2code/status/timeout"] == 0.0
    for name in ("ssim", "mse", "cosine", "histogram", "edge", "combined"):
        assert logged[f"image2code/similarity/{name}"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image"):
        reward(["a"])


# ------------------------------------------------------------------------------------------- render cache, hook


def code_length_bonus(code, reference_image, result):
    """A hook for the tests: 1.0 when the code rendered, else minus its length / 100."""
    return 1.0 if result.status == "ok" else -len(code) / 100


def failing_hook(code, reference_image, result):
    raise RuntimeError("boom")


def test_render_once_per_batch_shared_with_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "i2c_test_hooks", sys.modules[__name__])
    ref = _reference()
    sandbox = FakeSandbox({"good": FakeResult("ok", ref), "bad": FakeResult("syntax_error")})
    funcs, weights = R.build_reward_funcs(R.RewardConfig(), sandbox, "i2c_test_hooks:code_length_bonus", 0.25)
    assert [f.__name__ for f in funcs] == ["image2code_reward", "code_length_bonus"]
    assert weights == [1.0, 0.25]
    completions = [_fenced("good"), _fenced("bad"), "good"]
    images = [ref] * 3
    main, hook = funcs
    assert main(completions, image=images) == pytest.approx([1.0, -1.0, 1.0])
    assert hook(completions, image=images) == pytest.approx([1.0, -0.03, 1.0])
    assert sandbox.calls == [["good", "bad", "good"]]  # ONE render call for the batch, reused by the hook
    main([_fenced("bad")], image=[ref])  # next batch renders again
    assert len(sandbox.calls) == 2


def test_without_hook_and_bad_hooks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sandbox = FakeSandbox({})
    funcs, weights = R.build_reward_funcs(R.RewardConfig(), sandbox, None, 1.0)
    assert [f.__name__ for f in funcs] == ["image2code_reward"] and weights == [1.0]
    with pytest.raises(ValueError, match="import path"):
        R.build_reward_funcs(R.RewardConfig(), sandbox, "no_colon_here", 1.0)
    with pytest.raises(ModuleNotFoundError):
        R.build_reward_funcs(R.RewardConfig(), sandbox, "no_such_package_xyz.mod:f", 1.0)
    monkeypatch.setitem(sys.modules, "i2c_test_hooks", sys.modules[__name__])
    with pytest.raises(ValueError, match="no attribute"):
        R.build_reward_funcs(R.RewardConfig(), sandbox, "i2c_test_hooks:not_there", 1.0)
    with pytest.raises(ValueError, match="not callable"):
        R.build_reward_funcs(R.RewardConfig(), sandbox, "i2c_test_hooks:R", 1.0)
    hook_file = tmp_path / "my_hooks.py"
    hook_file.write_text("def shape_bonus(code, reference_image, result):\n    return 0.5\n")
    funcs, weights = R.build_reward_funcs(R.RewardConfig(), sandbox, f"{hook_file}:shape_bonus", 2.0)
    assert funcs[1].__name__ == "shape_bonus" and weights == [1.0, 2.0]


def test_failing_hook_scores_none() -> None:
    ref = _reference()
    hook = R.HookReward(failing_hook, FakeSandbox({"a": FakeResult("ok", ref)}))
    assert hook.__name__ == "failing_hook"
    assert hook(["a", "b"], image=[ref, ref]) == [None, None]


def test_real_sandbox_if_available() -> None:
    """With core.rewards.sandbox present and working here: one real batch through the main reward."""
    sandbox_module = pytest.importorskip("core.rewards.sandbox")
    ref = _reference()
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2], [1, 2])"
    with sandbox_module.Sandbox() as sandbox:
        probe = sandbox.render([code])[0]
        if probe.status != "ok":
            pytest.skip(f"core.rewards.sandbox cannot render here: {probe.status} ({probe.error})")
        funcs, _ = R.build_reward_funcs(R.RewardConfig(), sandbox, None, 1.0)
        scores = funcs[0]([_fenced(code), _fenced("def broken(:"), _fenced("1 / 0")], image=[ref] * 3)
    assert 0.3 <= scores[0] <= 1.0
    assert scores[1:] == pytest.approx([-1.0, -0.5])


def test_reference_code_scores_full_reward_in_real_sandbox() -> None:
    """The sample's reference code, rendered by core.rewards.sandbox, reproduces the stored image:
    reward 1.0 per kind."""
    import random

    sandbox_module = pytest.importorskip("core.rewards.sandbox")
    data = load_recipe_module("image2code", "data")
    rng = random.Random(0)
    samples = [data.make_sample_record(f"k{i}", rng, kind) for i, kind in enumerate(data.KINDS)]
    with sandbox_module.Sandbox() as sandbox:
        if sandbox.render(["import matplotlib.pyplot as plt\nplt.plot([1])"])[0].status != "ok":
            pytest.skip("core.rewards.sandbox cannot render here")
        reward = R.Image2CodeReward(sandbox)
        scores = reward([_fenced(r["reference_code"]) for _, r in samples], image=[img for img, _ in samples])
    assert scores == pytest.approx([1.0] * len(samples), abs=1e-6)


def test_empty_and_repeated_code_blocks_in_real_sandbox() -> None:
    """Exact rewards, through core.rewards.sandbox, for empty answers (no code, an empty or whitespace-only fence,
    repeated
    empty fences, a blank figure) and for the reference code once and repeated (run once: the last python block)."""
    import random

    sandbox_module = pytest.importorskip("core.rewards.sandbox")
    data = load_recipe_module("image2code", "data")
    image, record = data.make_sample_record("k0", random.Random(0), "bar")
    code = record["reference_code"]
    empty = "```python\n```"
    completions = {
        "no code at all": "",
        "empty fence": empty,
        "empty fence x5": empty * 5,
        "whitespace-only fence": "```python\n  \n\t\n```",
        "blank figure": _fenced("import matplotlib.pyplot as plt\nplt.figure()"),
        "well-formed": _fenced(code),
        "well-formed x2": _fenced(code) * 2,
        "well-formed, then an empty fence": _fenced(code) + empty,
    }
    with sandbox_module.Sandbox() as sandbox:
        if sandbox.render(["import matplotlib.pyplot as plt\nplt.plot([1])"])[0].status != "ok":
            pytest.skip("core.rewards.sandbox cannot render here")
        scores = R.Image2CodeReward(sandbox)(list(completions.values()), image=[image] * len(completions))
    expected = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert dict(zip(completions, scores, strict=True)) == pytest.approx(dict(zip(completions, expected, strict=True)))



@pytest.mark.slow
def test_almost_no_ink_is_no_image_in_real_sandbox(tmp_path: Path) -> None:
    """A figure with next to no ink (a near-white speck, one dot) is an empty answer: exactly the no_image value, not
    the ~0.6 a blank canvas earns against a mostly-white chart. Every sample chart still scores 1.0 against itself,
    and empty axes (a drawing attempt) are still "ok"."""
    import json

    sandbox_module = pytest.importorskip("core.rewards.sandbox")
    data = load_recipe_module("image2code", "data")
    rows = [json.loads(line) for line in data.create_sample(tmp_path, n=16, seed=0).read_text().splitlines()]
    charts = [Image.open(tmp_path / row["image_path"]) for row in rows]
    figure = "import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(3, 2.4), dpi=64)\n"
    nothing = [
        figure + "fig.text(.5, .5, '.', color=(.99, .99, .99))",  # a near-white speck
        figure + "fig.text(.5, .5, '.', color='black')",  # one black dot
        figure + "fig.add_artist(plt.Circle((.5, .5), .005, color='black'))",  # one tiny disc
    ]
    empty_axes = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)"
    config = R.RewardConfig(no_image_penalty=-0.25)
    with sandbox_module.Sandbox() as sandbox:
        if sandbox.render(["import matplotlib.pyplot as plt\nplt.plot([1])"])[0].status != "ok":
            pytest.skip("core.rewards.sandbox cannot render here")
        reward = R.Image2CodeReward(sandbox, config)
        codes = [*nothing, empty_axes]
        references = charts[: len(codes)]
        scores = reward([_fenced(code) for code in codes], image=references)
        results = reward.cache.render(codes)
        own = reward([_fenced(row["reference_code"]) for row in rows], image=charts)
    assert scores[:3] == [-0.25] * 3  # exactly no_image, whatever the reference
    assert [R.effective_status(result) for result in results] == ["no_image"] * 3 + ["ok"]
    assert 0.3 < scores[3] < 1.0  # empty axes: an attempt, scored by similarity
    assert own == pytest.approx([1.0] * len(rows), abs=1e-6)
