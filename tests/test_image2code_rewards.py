"""image2code rewards: code extraction, the built-in rewards per sandbox status, their weighted total (the original
formula), one render per batch shared by every reward, program scorers, and the old reward keys' mapping."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from helpers import RECIPES_DIR, load_recipe_module
from PIL import Image, ImageDraw

from core.errors import ConfigError

R = load_recipe_module("image2code", "rewards")
NAMES = ["code_execution_reward", "image_similarity_reward", "status_penalty_reward"]
WEIGHTS = [0.3, 0.7, 1.0]


@dataclass
class FakeResult:
    """Same fields as core.rewards.sandbox.RenderResult."""

    status: str
    image: Image.Image | None = None
    error: str = ""
    seconds: float = 0.01


class FakeSandbox:
    """Returns the result queued for each code (by code text) through `then`, as Sandbox.map, and counts calls."""

    def __init__(self, results: dict[str, FakeResult]) -> None:
        self.results = results
        self.calls: list[list[str]] = []

    def map(self, codes: list[str], then) -> list:
        self.calls.append(list(codes))
        results = [self.results.get(code, FakeResult("runtime_error", error="unknown")) for code in codes]
        return [then(i, result) for i, result in enumerate(results)]


def _reference() -> Image.Image:
    image = Image.new("RGB", (96, 72), "white")
    ImageDraw.Draw(image).rectangle([20, 20, 60, 50], fill=(30, 90, 200))
    return image


def _fenced(code: str) -> str:
    return f"Here is the code:\n```python\n{code}\n```\nDone."


def _totals(funcs, weights, completions, **columns) -> list[float | None]:
    """TRL's sum: weight x reward over the reward functions, per completion (None when every reward is None)."""
    per_func = [func(completions, **columns) for func in funcs]
    totals = []
    for values in zip(*per_func, strict=True):
        scored = [w * v for w, v in zip(weights, values, strict=True) if v is not None]
        totals.append(sum(scored) if scored else None)
    return totals


def _sample_record_maker() -> ModuleType:
    """The module with `make_sample_record` (sample.py once the generator moved there, data.py before)."""
    if (RECIPES_DIR / "image2code" / "sample.py").is_file():
        sample = load_recipe_module("image2code", "sample")
        if hasattr(sample, "make_sample_record"):
            return sample
    return load_recipe_module("image2code", "data")


def _real_sandbox(**limits):
    """A started core.rewards.sandbox.Sandbox, or a skip where this machine cannot render."""
    sandbox_module = pytest.importorskip("core.rewards.sandbox")
    sandbox = sandbox_module.Sandbox(sandbox_module.SandboxLimits(**limits)) if limits else sandbox_module.Sandbox()
    probe = sandbox.render(["import matplotlib.pyplot as plt\nplt.plot([1, 2], [1, 2])"])[0]
    if probe.status != "ok":
        sandbox.close()
        pytest.skip(f"core.rewards.sandbox cannot render here: {probe.status} ({probe.error})")
    return sandbox


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


# ------------------------------------------------------------------------------------------ rewards per status


def test_builtin_rewards_per_status_and_their_total() -> None:
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
    funcs = R.build_reward_funcs(NAMES, FakeSandbox(results))
    assert [f.__name__ for f in funcs] == NAMES
    names = list(results)
    completions = [_fenced(n) for n in names]
    execution, similarity, penalty = (dict(zip(names, f(completions, image=[ref] * 9), strict=True)) for f in funcs)
    assert execution == {n: 1.0 if n == "perfect" else 0.0 for n in names}
    assert similarity["perfect"] == pytest.approx(1.0)
    assert all(similarity[n] == 0.0 for n in names if n != "perfect")
    assert penalty == pytest.approx(
        {
            "perfect": 0.0,
            "blank": 0.0,  # a single-colour figure: nothing drawn, counts as no_image
            "syntax": -1.0,
            "runtime": -0.5,
            "timeout": -0.5,
            "killed": -0.5,
            "noimg": 0.0,
            "ok_without_image": 0.0,  # counts as no_image
            "weird": -0.5,  # an unknown status counts as runtime_error
        }
    )
    totals = _totals(funcs, WEIGHTS, completions, image=[ref] * 9)
    assert totals == pytest.approx([1.0, 0.0, -1.0, -0.5, -0.5, -0.5, 0.0, 0.0, -0.5])
    # score_result (evaluate.py's total) is the same weighted sum
    assert [R.score_result(results[n], ref)[0] for n in names] == pytest.approx(totals)


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
    funcs = R.build_reward_funcs(NAMES, FakeSandbox(results), config)
    scores = _totals(funcs, WEIGHTS, list(results), image=[ref] * len(results))
    assert scores[:5] == [-0.25] * 5  # scored exactly as no_image, whatever its penalty
    assert 0.3 < scores[5] < 1.0 and scores[6] == pytest.approx(1.0)
    assert [R.effective_status(results[name]) for name in results] == ["no_image"] * 5 + ["ok"] * 2
    assert R.score_result(results["white"], ref, R.RewardConfig()) == (0.0, "no_image", None)
    assert R.ink_fraction(one_dot) == pytest.approx(1 / (96 * 72))
    assert R.ink_fraction(faint) == 0.0 and R.ink_fraction(small_mark) == pytest.approx(100 / (96 * 72))
    inverted = Image.new("RGB", ref.size, "black")  # the dominant colour, not white, is the background
    inverted.putpixel((5, 5), (255, 255, 255))
    assert R.is_blank(inverted) and not R.is_blank(ref)


def test_penalties_configure_the_penalty_reward_and_weights_scale_the_total() -> None:
    ref = _reference()
    config = R.RewardConfig(syntax_error_penalty=-2.0, timeout_penalty=-0.1, no_image_penalty=-0.2)
    results = {
        "a": FakeResult("ok", ref),
        "b": FakeResult("syntax_error"),
        "c": FakeResult("timeout"),
        "d": FakeResult("no_image"),
    }
    funcs = R.build_reward_funcs(NAMES, FakeSandbox(results), config)
    assert funcs[2](list(results), image=[ref] * 4) == pytest.approx([0.0, -2.0, -0.1, -0.2])
    # weights are reward_weights only: 0.5 / 0.5 instead of the original's 0.3 / 0.7
    assert _totals(funcs, [0.5, 0.5, 1.0], list(results), image=[ref] * 4) == pytest.approx([1.0, -2.0, -0.1, -0.2])
    weights = {"code_execution_reward": 0.5, "image_similarity_reward": 0.5, "status_penalty_reward": 1.0}
    assert R.score_result(results["a"], ref, config, weights)[0] == pytest.approx(1.0)
    assert config.similarity_weights.ssim == 0.3
    with pytest.raises(ValueError):
        R.RewardConfig(edge_weight=-1)


def test_missing_reference_is_none_and_metrics_are_logged_once_per_batch() -> None:
    ref = _reference()
    results = {"a": FakeResult("ok", ref), "b": FakeResult("syntax_error"), "c": FakeResult("ok", ref)}
    logged: list[tuple[str, float]] = []
    funcs = R.build_reward_funcs(NAMES, FakeSandbox(results))
    images = [ref, ref, None]
    scores = [f(["a", "b", "c"], image=images, log_metric=lambda k, v: logged.append((k, v))) for f in funcs]
    assert scores == [[1.0, 0.0, None], [pytest.approx(1.0), 0.0, None], [0.0, -1.0, None]]
    metrics = dict(logged)
    assert len(logged) == len(metrics)  # three rewards read the batch, its metrics are logged once
    assert metrics["image2code/execution_success"] == pytest.approx(0.5)
    assert metrics["image2code/status/syntax_error"] == pytest.approx(0.5)
    assert metrics["image2code/status/timeout"] == 0.0
    for name in ("ssim", "mse", "cosine", "histogram", "edge", "combined"):
        assert metrics[f"image2code/similarity/{name}"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image"):
        funcs[0](["a"])


# --------------------------------------------------------------------------------- one render, program scorers


def code_length_bonus(code, reference_image, result):
    """A program scorer for the tests: 1.0 when the code rendered, else minus its length / 100."""
    return 1.0 if result.status == "ok" else -len(code) / 100


def failing_scorer(code, reference_image, result):
    raise RuntimeError("boom")


def code_chars_reward(completions, **kwargs):
    """A TRL-contract user reward for the tests."""
    return [float(len(R.extract_code(c))) for c in completions]


def test_one_render_per_batch_shared_by_every_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "i2c_test_rewards", sys.modules[__name__])
    ref = _reference()
    sandbox = FakeSandbox({"good": FakeResult("ok", ref), "bad": FakeResult("syntax_error")})
    names = [*NAMES, "i2c_test_rewards:code_length_bonus", "i2c_test_rewards:code_chars_reward"]
    funcs = R.build_reward_funcs(names, sandbox)
    assert [f.__name__ for f in funcs] == [*NAMES, "code_length_bonus", "code_chars_reward"]
    assert isinstance(funcs[3], R.ProgramReward) and funcs[4] is code_chars_reward  # TRL rewards stay as they are
    completions = [_fenced("good"), _fenced("bad"), "good"]
    images = [ref] * 3
    values = [f(completions, image=images) for f in funcs]
    assert values[0] == [1.0, 0.0, 1.0] and values[2] == [0.0, -1.0, 0.0]
    assert values[3] == pytest.approx([1.0, -0.03, 1.0]) and values[4] == [4.0, 3.0, 4.0]
    assert sandbox.calls == [["good", "bad"]]  # ONE render call for the batch, read by every reward; "good" once
    funcs[0](completions, image=[ref.copy() for _ in range(3)])  # same programs, other reference images: rescored
    funcs[1]([_fenced("bad")], image=[ref])  # the next batch renders again
    assert len(sandbox.calls) == 3


def test_identical_program_and_reference_pairs_are_rendered_and_scored_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's agreeing completions (same program, same reference image object, as TRL hands a group's rows) are
    rendered and scored once; every position still gets its values, in order."""
    ref, other = _reference(), _reference()
    sandbox = FakeSandbox({"a": FakeResult("ok", ref), "b": FakeResult("syntax_error")})
    scored = []
    score_program = R.score_program
    monkeypatch.setattr(R, "score_program", lambda result, *args: scored.append(result) or score_program(result, *args))
    funcs = R.build_reward_funcs(NAMES, sandbox)
    values = [f(["a", "a", "b", "a"], image=[ref, ref, ref, other]) for f in funcs]
    assert sandbox.calls == [["a", "b", "a"]]  # (a, ref) once, (b, ref), and (a, other): another reference
    assert len(scored) == 3
    assert values[0] == [1.0, 1.0, 0.0, 1.0] and values[2] == [0.0, 0.0, -1.0, 0.0]
    assert values[1][:2] == [pytest.approx(1.0)] * 2 and values[1][2] == 0.0 and 0.0 < values[1][3] <= 1.0


def test_a_failing_score_costs_only_its_own_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """Similarity that raises on one image (a degenerate one) scores that program's similarity 0 (status "ok"), and
    the batch's other programs are scored as usual."""
    ref = _reference()
    odd = ref.resize((50, 40))
    similarity = R.image_similarity

    def fragile(reference, generated, weights=None):
        if generated.size == odd.size:
            raise ValueError("degenerate image")
        return similarity(reference, generated, weights)

    monkeypatch.setattr(R, "image_similarity", fragile)
    sandbox = FakeSandbox({"a": FakeResult("ok", ref), "odd": FakeResult("ok", odd), "c": FakeResult("ok", ref)})
    batch = R.ProgramScorer(sandbox).score(["a", "odd", "c"], image=[ref] * 3)
    assert batch.statuses == ["ok"] * 3
    assert batch.similarities[1] is None
    assert batch.similarities[0]["combined"] == pytest.approx(1.0) == batch.similarities[2]["combined"]


def test_scores_in_the_sandbox_pool_equal_serial_scores_on_the_same_images() -> None:
    """ProgramScorer scores each program in the sandbox's threads as it is rendered: exactly the floats the serial
    path (`score_program` one after another) gives on the same rendered images, each at its own position."""
    maker = _sample_record_maker()
    rng = random.Random(1)
    samples = [maker.make_sample_record(f"p{i}", rng, kind) for i, kind in enumerate(maker.KINDS[:6])]
    images = [image for image, _ in samples]
    codes = [record["reference_code"] for _, record in samples]
    programs = [*codes, codes[0], "1 / 0", codes[2]]  # repeats and a failure, against other references
    references = [*images, images[1], images[0], images[3]]
    with _real_sandbox(wall_s=5.0, cpu_s=5.0) as sandbox:
        batch = R.ProgramScorer(sandbox).score([_fenced(code) for code in programs], image=references)
    config = R.RewardConfig()
    serial = [R.score_program(result, ref, config) for result, ref in zip(batch.results, references, strict=True)]
    assert list(zip(batch.statuses, batch.similarities, strict=True)) == serial  # exact, not approx
    assert batch.statuses[-2] == "runtime_error" and batch.similarities[0]["combined"] == pytest.approx(1.0)
    assert batch.results[0] is batch.results[6]  # one render of the repeated program


def test_program_scorer_is_told_apart_from_a_trl_reward() -> None:
    def keywords(completions, image=None):
        return []

    def any_names(c, img, res):
        return 0.0

    assert R.is_program_scorer(code_length_bonus) and R.is_program_scorer(any_names)
    assert not R.is_program_scorer(code_chars_reward)  # **kwargs: TRL's contract
    assert not R.is_program_scorer(keywords)  # takes `completions`
    assert not R.is_program_scorer(lambda code: 0.0)  # neither: left to TRL (the start-up check reports it)


def test_bad_user_rewards(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sandbox = FakeSandbox({})
    with pytest.raises(ValueError, match="unknown reward 'execution'"):
        R.build_reward_funcs(["execution"], sandbox)
    with pytest.raises(ModuleNotFoundError):
        R.build_reward_funcs(["no_such_package_xyz.mod:f"], sandbox)
    monkeypatch.setitem(sys.modules, "i2c_test_rewards", sys.modules[__name__])
    with pytest.raises(ValueError, match="no attribute"):
        R.build_reward_funcs(["i2c_test_rewards:not_there"], sandbox)
    with pytest.raises(ValueError, match="not callable"):
        R.build_reward_funcs(["i2c_test_rewards:NAMES"], sandbox)
    clash = tmp_path / "clash.py"
    clash.write_text("def code_execution_reward(code, reference_image, result):\n    return 0.5\n")
    with pytest.raises(ValueError, match="like the built-in reward"):
        R.build_reward_funcs([f"{clash}:code_execution_reward"], sandbox)
    scorer_file = tmp_path / "my_scorers.py"
    scorer_file.write_text("def shape_bonus(code, reference_image, result):\n    return 0.5\n")
    (func,) = R.build_reward_funcs([f"{scorer_file}:shape_bonus"], sandbox)
    assert func.__name__ == "shape_bonus" and func(["x"], image=[_reference()]) == [0.5]


def test_failing_program_scorer_scores_none() -> None:
    ref = _reference()
    reward = R.ProgramReward(failing_scorer, R.ProgramScorer(FakeSandbox({"a": FakeResult("ok", ref)})))
    assert reward.__name__ == "failing_scorer"
    assert reward(["a", "b"], image=[ref, ref]) == [None, None]


# ------------------------------------------------------------------------------------------ old reward keys


def test_old_reward_keys_map_onto_reward_funcs_and_weights() -> None:
    resolve = R.resolve_reward_settings
    assert resolve(NAMES, None) == (NAMES, WEIGHTS)  # unset reward_weights: each reward's default
    assert resolve(["image_similarity_reward", "pkg.m:f"], None) == (["image_similarity_reward", "pkg.m:f"], [0.7, 1])
    # an old config: the two weights and a hook, no reward_weights
    old = {"code_execution_weight": 0.4, "image_similarity_weight": 0.6, "custom_score_fn": "pkg.m:hook"}
    assert resolve(NAMES, None, **old, custom_score_weight=0.1) == ([*NAMES, "pkg.m:hook"], [0.4, 0.6, 1.0, 0.1])
    assert resolve(NAMES, None, custom_score_fn="pkg.m:hook") == ([*NAMES, "pkg.m:hook"], [*WEIGHTS, 1.0])
    # the shipped config (reward_weights set) plus the old hook flags: appended to both lists
    assert resolve(NAMES, WEIGHTS, custom_score_fn="pkg.m:hook", custom_score_weight=0.1) == (
        [*NAMES, "pkg.m:hook"],
        [*WEIGHTS, 0.1],
    )
    assert resolve(NAMES, WEIGHTS, code_execution_weight=0.3) == (NAMES, WEIGHTS)  # agreeing: fine


def test_old_reward_keys_that_cannot_map_say_what_to_write() -> None:
    resolve = R.resolve_reward_settings
    with pytest.raises(ConfigError) as err:
        resolve(NAMES, WEIGHTS, code_execution_weight=0.5)
    assert "write reward_weights: [0.5, 0.7, 1] (flag: --reward_weights 0.5 0.7 1)" in str(err.value)
    assert "code_execution_weight=0.5" in str(err.value)
    with pytest.raises(ConfigError, match="reward_weights has 2 value"):
        resolve(NAMES, [0.3, 0.7])
    with pytest.raises(ConfigError, match="without custom_score_fn"):
        resolve(NAMES, None, custom_score_weight=0.5)
    with pytest.raises(ConfigError, match="add code_execution_reward to reward_funcs or drop code_execution_weight"):
        resolve(["image_similarity_reward"], None, code_execution_weight=0.3)
    with pytest.raises(ConfigError, match="already in reward_funcs"):
        resolve([*NAMES, "pkg.m:hook"], None, custom_score_fn="pkg.m:hook")


def test_run_reward_weights_reads_new_and_old_run_configs() -> None:
    new = {"reward_funcs": [*NAMES[:2], "pkg.m:f"]}
    assert R.run_reward_weights(new, {"reward_weights": [0.5, 0.5, 2.0]}) == {
        "code_execution_reward": 0.5,
        "image_similarity_reward": 0.5,
    }
    old = {"train_file": "x.jsonl", "code_execution_weight": 0.2, "image_similarity_weight": 0.8}
    assert R.run_reward_weights(old, {"reward_weights": [1.0, 0.1]}) == dict(zip(NAMES, [0.2, 0.8, 1.0], strict=True))


def test_train_parses_old_and_new_keys_to_one_canonical_form(tmp_path: Path) -> None:
    """Through the recipe's own parser: an old-style config file reads as reward_funcs + reward_weights, the shipped
    smoke config gives the original formula's weights, and an old key that contradicts it is refused."""
    train = load_recipe_module("image2code", "train")
    from core.training.config import parse_config

    cpu = ["--output_dir", str(tmp_path), "--bf16", "false"]  # TRL's default bf16 needs a GPU

    def parse(*args: str):
        script_args, training_args, _ = parse_config(train.ScriptArguments, args=[*args, *cpu])
        train.apply_old_reward_keys(script_args, training_args)
        return script_args, training_args

    old_config = tmp_path / "old.yaml"
    old_config.write_text(
        "train_file: data/x.jsonl\neval_file: data/y.jsonl\ncode_execution_weight: 0.3\n"
        "image_similarity_weight: 0.7\ncustom_score_fn: pkg.m:hook\ncustom_score_weight: 0.1\n"
    )
    script_args, training_args = parse("--config", str(old_config))
    assert (script_args.dataset_name, script_args.eval_dataset_name) == ("data/x.jsonl", "data/y.jsonl")
    assert script_args.reward_funcs == [*NAMES, "pkg.m:hook"] and training_args.reward_weights == [*WEIGHTS, 0.1]
    assert script_args.custom_score_fn is None and script_args.code_execution_weight is None  # recorded once

    smoke = str(RECIPES_DIR / "image2code" / "config_smoke.yaml")
    script_args, training_args = parse("--config", smoke)
    assert (script_args.reward_funcs, training_args.reward_weights) == (NAMES, WEIGHTS)
    # the README's old hook flags on top of the shipped config: appended to reward_funcs and reward_weights
    script_args, training_args = parse(
        "--config", smoke, "--custom_score_fn", "pkg.m:hook", "--custom_score_weight", "0.5"
    )
    assert (script_args.reward_funcs, training_args.reward_weights) == ([*NAMES, "pkg.m:hook"], [*WEIGHTS, 0.5])
    script_args, training_args = parse()  # no config file at all: the same defaults
    assert (script_args.reward_funcs, training_args.reward_weights) == (NAMES, WEIGHTS)
    with pytest.raises(ConfigError, match="--reward_weights 0.5 0.7 1"):
        parse("--config", smoke, "--code_execution_weight", "0.5")


# ------------------------------------------------------------------------------------------------ real sandbox


def _old_formula(result, reference) -> float:
    """The reward before it was split into functions (the original project's formula, as rewards.py computed it):
    success * code_execution_weight (0.3) + similarity * image_similarity_weight (0.7) + penalty(status)."""
    similarity_module = load_recipe_module("image2code", "similarity")
    penalty = {"ok": 0.0, "syntax_error": -1.0, "runtime_error": -0.5, "timeout": -0.5, "killed": -0.5, "no_image": 0.0}
    status = R.effective_status(result)
    success = 1.0 if status == "ok" else 0.0
    similarity = similarity_module.image_similarity(reference, result.image)["combined"] if status == "ok" else 0.0
    return success * 0.3 + similarity * 0.7 + penalty[status]


@pytest.mark.slow
def test_default_rewards_and_weights_give_the_old_total_on_real_renders(tmp_path: Path) -> None:
    """The acceptance check of the split: on programs rendered by core.rewards.sandbox (every sample chart kind,
    each against its own image and against another kind's, a changed colour, failures of every kind, empty and
    blank answers), sum(reward_weights x reward) of the default reward_funcs equals the old single reward."""
    maker = _sample_record_maker()
    rng = random.Random(0)
    samples = [maker.make_sample_record(f"k{i}", rng, kind) for i, kind in enumerate(maker.KINDS)]
    images = [image for image, _ in samples]
    codes = [record["reference_code"] for _, record in samples]
    figure = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)\n"
    others = [
        codes[0] + "\nimport matplotlib.pyplot as plt\nplt.gca().set_facecolor('#ffd0d0')",  # changed colours
        figure + "ax.bar(['a', 'b'], [1, 3], color='green')",
        figure,  # empty axes: an attempt
        "import matplotlib.pyplot as plt\nplt.figure()",  # blank: no_image
        "",  # the empty program: no_image
        "def broken(:",  # syntax_error
        "1 / 0",  # runtime_error
        "while True:\n    pass",  # timeout
        "print('no figure')",  # no_image
    ]
    programs = codes + codes[1:] + codes[:1] + others  # own image, then the next kind's image, then the others
    references = images + images + [images[0]] * len(others)
    completions = [_fenced(code) for code in programs]
    sandbox = _real_sandbox(wall_s=2.0, cpu_s=2.0)
    with sandbox:
        funcs = R.build_reward_funcs(NAMES, sandbox)
        totals = _totals(funcs, WEIGHTS, completions, image=references)
        results = funcs[0].scorer.score(completions, image=references).results  # cached: no second render
        assert funcs[0].scorer.renders == 1
    old = [_old_formula(result, reference) for result, reference in zip(results, references, strict=True)]
    statuses = [R.effective_status(result) for result in results]
    assert {"ok", "no_image", "syntax_error", "runtime_error", "timeout"} <= set(statuses)
    assert any(0.3 < value < 0.99 for value in old)  # partial similarity is covered, not just 1.0 / failures
    assert totals == pytest.approx(old, abs=1e-9)
    assert totals[: len(codes)] == pytest.approx([1.0] * len(codes), abs=1e-6)  # each reference redraws its image


def test_real_sandbox_batch() -> None:
    """One real batch through the built-in rewards (fast; the slow test above covers every kind)."""
    ref = _reference()
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2], [1, 2])"
    with _real_sandbox() as sandbox:
        funcs = R.build_reward_funcs(NAMES, sandbox)
        scores = _totals(funcs, WEIGHTS, [_fenced(code), _fenced("def broken(:"), _fenced("1 / 0")], image=[ref] * 3)
    assert 0.3 <= scores[0] <= 1.0
    assert scores[1:] == pytest.approx([-1.0, -0.5])


def test_empty_and_repeated_code_blocks_in_real_sandbox() -> None:
    """Exact totals, through core.rewards.sandbox, for empty answers (no code, an empty or whitespace-only fence,
    repeated empty fences, a blank figure) and for the reference code once and repeated (run once: the last python
    block)."""
    image, record = _sample_record_maker().make_sample_record("k0", random.Random(0), "bar")
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
    with _real_sandbox() as sandbox:
        funcs = R.build_reward_funcs(NAMES, sandbox)
        scores = _totals(funcs, WEIGHTS, list(completions.values()), image=[image] * len(completions))
    expected = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert dict(zip(completions, scores, strict=True)) == pytest.approx(dict(zip(completions, expected, strict=True)))


@pytest.mark.slow
def test_almost_no_ink_is_no_image_in_real_sandbox() -> None:
    """A figure with next to no ink (a near-white speck, one dot) is an empty answer: exactly the no_image value, not
    the ~0.6 a blank canvas earns against a mostly-white chart. Every sample chart still scores 1.0 against itself,
    and empty axes (a drawing attempt) are still "ok"."""
    maker = _sample_record_maker()
    rng = random.Random(0)
    samples = [maker.make_sample_record(f"c{i}", rng, maker.KINDS[i % len(maker.KINDS)]) for i in range(16)]
    charts = [image for image, _ in samples]
    figure = "import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(3, 2.4), dpi=64)\n"
    nothing = [
        figure + "fig.text(.5, .5, '.', color=(.99, .99, .99))",  # a near-white speck
        figure + "fig.text(.5, .5, '.', color='black')",  # one black dot
        figure + "fig.add_artist(plt.Circle((.5, .5), .005, color='black'))",  # one tiny disc
    ]
    empty_axes = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)"
    config = R.RewardConfig(no_image_penalty=-0.25)
    with _real_sandbox() as sandbox:
        funcs = R.build_reward_funcs(NAMES, sandbox, config)
        codes = [*nothing, empty_axes]
        references = charts[: len(codes)]
        scores = _totals(funcs, WEIGHTS, [_fenced(code) for code in codes], image=references)
        results = funcs[0].scorer.score([_fenced(code) for code in codes], image=references).results
        own = _totals(funcs, WEIGHTS, [_fenced(record["reference_code"]) for _, record in samples], image=charts)
    assert scores[:3] == [-0.25] * 3  # exactly no_image, whatever the reference
    assert [R.effective_status(result) for result in results] == ["no_image"] * 3 + ["ok"]
    assert 0.3 < scores[3] < 1.0  # empty axes: an attempt, scored by similarity
    assert own == pytest.approx([1.0] * len(samples), abs=1e-6)
