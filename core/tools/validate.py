"""`vlm-grpo validate CONFIG`: everything a run checks before its weights load, in seconds, on any machine.

1. config: parsed exactly as the recipe's train.py parses it (its `ScriptArguments` and `ALIASES`, through
   `core.training.config.parse_config`): unknown keys ("did you mean"), out-of-range values, bad flag values;
2. batch: TRL's rule that a generation batch (per_device_train_batch_size x processes x steps_per_generation, the
   latter gradient_accumulation_steps unless set) holds whole groups of num_generations completions, for the launch
   being validated (--num_gpus), with the nearest numbers that work when it does not;
3. data: every data source of the config (dataset_name, eval_dataset_name; old names too) through the recipe's own
   `data.check`, what `data.py --check` runs, with the config's options for it (images_root, splits, ...);
4. memory: the per-GPU plan of `core.plan` (real architectures on the meta device, no download) and its verdict.

The config is parsed for the launch, not for this machine: GRPOConfig sees --num_gpus processes, and bf16 is
accepted without a GPU (core.plan does the same). Exit status 0 when valid, 2 with every problem listed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

DATA_KEYS = ("dataset_name", "train_file", "dataset", "eval_dataset_name", "eval_file")
EVAL_KEYS = ("eval_dataset_name", "eval_file")
# Options of data.check that select the training rows: not applied to the eval source.
TRAIN_ONLY = ("dataset_train_split", "max_train_samples")
SMOKE_PROCESSES, LAUNCH_PROCESSES = 2, 8  # what SMOKE=1 and run_8gpu.sh start


@dataclass
class Report:
    """What validate found: one line per check, and the problems among them."""

    problems: list[str] = dataclasses.field(default_factory=list)

    def ok(self, check: str, text: str) -> None:
        print(f"  {check:<7} ok: {text}")

    def note(self, check: str, text: str) -> None:
        print(f"  {check:<7} --  {text}")

    def problem(self, check: str, text: str) -> None:
        first, *rest = text.splitlines() or [""]
        print(f"  {check:<7} PROBLEM: {first}")
        for line in rest:
            print(f"  {'':<7}          {line}")
        self.problems.append(f"{check}: {text}")


def model_in(config: Path, extra: list[str]) -> str:
    """model_name_or_path as the run will see it (the last --model_name_or_path flag wins over the file)."""
    try:
        model = (yaml.safe_load(config.read_text()) or {}).get("model_name_or_path") or ""
    except (OSError, yaml.YAMLError):
        model = ""
    for i, arg in enumerate(extra):
        if arg == "--model_name_or_path" and i + 1 < len(extra):
            model = extra[i + 1]
        elif arg.startswith("--model_name_or_path="):
            model = arg.split("=", 1)[1]
    return str(model)


@contextlib.contextmanager
def parsing_for_launch(num_gpus: int):
    """While active, `parse_config` builds a GRPOConfig that sees `num_gpus` processes and accepts bf16 without a
    GPU, and leaves the generation-batch divisibility to `check_batch` (which says which numbers work) instead of
    raising TRL's bare ValueError. sys.excepthook (parse_config installs the run's error hook) is restored after."""
    import core.training.config as config_module

    base = config_module.VLMGRPOConfig

    @dataclass
    class LaunchGRPOConfig(base):  # type: ignore[misc, valid-type]
        @property
        def world_size(self) -> int:  # type: ignore[override]
            return num_gpus

        def __post_init__(self) -> None:
            use_cpu, self.use_cpu = self.use_cpu, True  # TrainingArguments refuses bf16 without a bf16 GPU otherwise
            try:
                super().__post_init__()
            except ValueError as exc:
                if "divisible" not in str(exc):
                    raise
            finally:
                self.use_cpu = use_cpu

    hook = sys.excepthook
    try:
        with mock.patch.object(config_module, "VLMGRPOConfig", LaunchGRPOConfig):
            yield
    finally:
        sys.excepthook = hook


def working_numbers(value: int, others: int, groups: int, limit: int = 3) -> list[int]:
    """Up to `limit` values near `value` (the nearest first) for which value x others is a multiple of `groups`."""
    step = groups // math.gcd(others, groups)  # value must be a multiple of this
    below = [v for v in range(value - value % step, 0, -step)][:limit]
    above = [v for v in range(value - value % step + step, value + step * limit + 1, step)][:limit]
    return sorted(set(below + above), key=lambda v: (abs(v - value), v))[:limit]


def check_batch(report: Report, training_args: Any, num_gpus: int) -> None:
    """TRL's rule: the generation batch must hold whole groups of num_generations completions (and the eval batch,
    when evaluating, whole groups of num_generations_eval)."""
    t = training_args
    groups = t.num_generations
    steps = t.steps_per_generation or t.gradient_accumulation_steps
    per_step = t.per_device_train_batch_size * num_gpus
    total = t.generation_batch_size or per_step * steps
    # steps_per_generation defaults to gradient_accumulation_steps: name the one to change
    steps_name = "steps_per_generation" if steps != t.gradient_accumulation_steps else "gradient_accumulation_steps"
    shape = (
        f"{t.per_device_train_batch_size} per device x {num_gpus} process(es) x {steps} step(s) per generation = "
        f"{total} completions"
    )
    if total % groups == 0:
        report.ok("batch", f"{shape} = {total // groups} prompt(s) x num_generations {groups}")
    else:
        divisors = [g for g in range(2, total + 1) if total % g == 0]
        near = sorted(divisors, key=lambda g: (abs(g - groups), g))[:3]
        options = [
            "per_device_train_batch_size "
            + " or ".join(map(str, working_numbers(t.per_device_train_batch_size, num_gpus * steps, groups))),
            f"{steps_name} " + " or ".join(map(str, working_numbers(steps, per_step, groups))),
        ]
        if near:
            options.append("num_generations " + " or ".join(map(str, sorted(near))))
        report.problem(
            "batch",
            f"{shape}, not a multiple of num_generations {groups} (TRL needs whole groups of completions per "
            f"prompt)\nnumbers that work with {num_gpus} process(es): " + "; ".join(options),
        )
    if t.do_eval and str(getattr(t.eval_strategy, "value", t.eval_strategy)) != "no":
        eval_groups = t.num_generations_eval or groups
        eval_total = t.per_device_eval_batch_size * num_gpus
        if eval_total % eval_groups:
            fix = working_numbers(t.per_device_eval_batch_size, num_gpus, eval_groups)
            report.problem(
                "batch",
                f"eval batch {t.per_device_eval_batch_size} per device x {num_gpus} process(es) = {eval_total}, not a "
                f"multiple of num_generations_eval {eval_groups}\nnumbers that work: per_device_eval_batch_size "
                + " or ".join(map(str, fix)),
            )


def check_options(check: Any, script_args: Any, aliases: dict[str, str], for_eval: bool) -> dict[str, Any]:
    """The keyword arguments of the recipe's `data.check` that the config sets: a parameter named like a
    ScriptArguments field, or like an old name of one (`splits` -> dataset_train_split)."""
    from core.data.records import resolve_input_path

    recipe_dir = Path(inspect.getfile(check)).parent
    options = {}
    for name in list(inspect.signature(check).parameters)[1:]:
        field_name = name if hasattr(script_args, name) else aliases.get(name)
        if not field_name or not hasattr(script_args, field_name) or (for_eval and field_name in TRAIN_ONLY):
            continue
        value = getattr(script_args, field_name)
        if value is None:
            continue
        if name.endswith("_root") and isinstance(value, str):
            value = resolve_input_path(value, recipe_dir)
        options[name] = value
    return options


def check_data(report: Report, recipe_dir: Path, script_args: Any, aliases: dict[str, str], spec: str) -> None:
    """Each data source of the config through the recipe's `data.check` (what `data.py --check` runs)."""
    from core.data.records import looks_like_path, resolve_input_path
    from core.errors import user_message
    from core.tools.recipe_modules import load_recipe_module

    sources = [(key, getattr(script_args, key)) for key in DATA_KEYS if getattr(script_args, key, None)]
    if not sources:
        report.note("data", "the config names no data source (dataset_name)")
        return
    check = getattr(load_recipe_module(recipe_dir, "data"), "check", None)
    if check is None:
        report.note("data", "not checked: the recipe's data.py has no check()")
        return
    for key, source in sources:
        local = looks_like_path(str(source), recipe_dir)
        resolved = resolve_input_path(str(source), recipe_dir) if local else str(source)
        if local and not Path(resolved).exists():
            report.problem(
                "data",
                f"{key} {source}: not found (looked in the working directory and in {recipe_dir})\n"
                f"make the sample data: vlm-grpo sample {spec}   (or point {key} at your data)",
            )
            continue
        options = check_options(check, script_args, aliases, for_eval=key in EVAL_KEYS)
        try:
            result = check(resolved, **options)
        except Exception as exc:  # noqa: BLE001 - any failure to read the data is the finding
            hint = "" if local else "\n(a hub dataset: check it where the hub is reachable, or --skip_data_check)"
            report.problem("data", f"{key} {source}: {user_message(exc)}{hint}")
            continue
        rows, detail = result if isinstance(result, tuple) else (result, "")
        report.ok("data", f"{key} {source}: {rows} rows" + (f" ({detail})" if detail else ""))


def check_memory(
    report: Report, recipe_dir: Path, script_args: Any, training_args: Any, model_args: Any, num_gpus: int, gb: float
) -> None:
    """The core.plan verdict for this launch (ZeRO stage from the recipe's deepspeed_zero2.yaml, as run_8gpu.sh)."""
    from core.plan.memory import Launch, plan_run, read_accelerate_config, with_changes

    accelerate_config = recipe_dir / "deepspeed_zero2.yaml"
    launch = Launch(
        num_gpus=num_gpus,
        gpu_memory_gb=gb,
        accelerate_config=str(accelerate_config) if accelerate_config.is_file() else None,
        **{"zero_stage": 2, **read_accelerate_config(accelerate_config)},
    )
    if num_gpus == 1:
        launch.zero_stage = 0
    try:
        plan = with_changes(
            plan_run(script_args, training_args, model_args, launch), script_args, training_args, model_args, launch
        )
    except Exception as exc:  # noqa: BLE001 - the planner's limits are not the config's problems
        report.note("memory", f"not planned ({type(exc).__name__}: {exc})")
        return
    verdict = next(line for line in plan.format().splitlines() if line.startswith("verdict:"))
    where = f"{plan.total_gb:.1f} GB per GPU at the peak ({plan.peak_phase}); {verdict}"
    if plan.fits:
        report.ok("memory", where)
    else:
        changes = "; ".join(f"{label} -> {new_gb:.1f} GB" for label, new_gb in plan.changes[:3])
        report.problem(
            "memory",
            where
            + (f"\ncheapest changes: {changes}" if changes else "")
            + f"\nbreakdown: vlm-grpo plan CONFIG --num_gpus {num_gpus} --gpu_memory_gb {gb:g}",
        )


def validate(
    config: Path,
    recipe_dir: Path,
    extra: list[str],
    *,
    num_gpus: int | None = None,
    gpu_memory_gb: float = 80.0,
    check_data_rows: bool = True,
    recipe_spec: str | None = None,
) -> int:
    """Run every check on `config` (+ `extra` flags) for `recipe_dir`; print one line per check; 0 or 2."""
    from core.errors import user_message
    from core.tools.recipe_modules import load_recipe_module
    from core.training.config import parse_config, script_aliases
    from core.training.model_ids import is_tiny

    report = Report()
    tiny = is_tiny(model_in(config, extra))
    if num_gpus is None:
        num_gpus = SMOKE_PROCESSES if tiny else LAUNCH_PROCESSES
    if num_gpus < 1:
        print(f"vlm-grpo validate: error: --num_gpus must be >= 1, got {num_gpus}", file=sys.stderr)
        return 2
    print(f"validating {config} for recipe {recipe_dir} on {num_gpus} process(es)")
    try:
        train = load_recipe_module(recipe_dir, "train")
        aliases = getattr(train, "ALIASES", None) or {}
        with parsing_for_launch(num_gpus):
            script_args, training_args, model_args = parse_config(
                train.ScriptArguments, ["--config", str(config), *extra], aliases=aliases
            )
    except (ValueError, OSError, ImportError, AttributeError) as exc:  # ConfigError is a ValueError
        report.problem("config", user_message(exc))
        script_args = None
    if script_args is not None:
        report.ok("config", f"parsed as {recipe_dir.name}/train.py parses it; model {model_args.model_name_or_path}")
        check_batch(report, training_args, num_gpus)
        if check_data_rows:
            every_alias = script_aliases(train.ScriptArguments, aliases)
            check_data(report, recipe_dir, script_args, every_alias, recipe_spec or str(recipe_dir))
        else:
            report.note("data", "not checked (--skip_data_check)")
        if tiny:
            report.note("memory", "not planned: a tiny test model (smoke runs are on CPU)")
        else:
            check_memory(report, recipe_dir, script_args, training_args, model_args, num_gpus, gpu_memory_gb)
    if report.problems:
        print(f"\n{len(report.problems)} problem(s) in {config}: fix and validate again")
        return 2
    print(f"\nvalid: {config} ({num_gpus} process(es))")
    return 0
