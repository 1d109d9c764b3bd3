"""`vlm-grpo`: list, copy, validate, sample, check, train and evaluate recipes from one command.

    vlm-grpo ls                                   the recipes: task, model, rewards
    vlm-grpo new my_task --from grounding         a copy to make your own (recipes/my_task)
    vlm-grpo sample my_task                       its synthetic sample data (what config_smoke.yaml reads)
    vlm-grpo validate recipes/my_task/config.yaml config, data rows, batch sizes, memory: in seconds, no weights
    vlm-grpo train my_task --smoke                CPU smoke run under the real launcher (run_8gpu.sh does the same)
    vlm-grpo eval outputs/my_task-20260101-120000 the recipe's evaluate.py on a finished run

Modelled on torchtune's `tune`: one argparse sub-command per verb, each with --help and an example. A RECIPE is a
name under this repository's recipes/ or a path to any folder with a train.py, so a copy made anywhere
(`vlm-grpo new NAME --from RECIPE --dest DIR`) works like the originals. sample, check and eval run the recipe's own
script (sample.py, data.py --check, evaluate.py) with this interpreter; train runs core/tools/launch.sh. Importing this
module is cheap: torch, TRL and the recipe code load only in the sub-commands that need them (validate, plan).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import keyword
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from core.tools.recipe_copy import NOT_COPIED_AT_TOP, copy_recipe
from core.tools.recipe_modules import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"
LAUNCHER = Path(__file__).resolve().with_name("launch.sh")
PROG = "vlm-grpo"
RECIPE_HELP = "a recipe name (vlm-grpo ls) or the path of a folder with a train.py"


class CliError(Exception):
    """A problem with what the person typed: printed as `vlm-grpo: error: ...`, exit status 2."""


# ---------------------------------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------------------------------


def known_recipes() -> list[str]:
    """Names of the recipes under this repository's recipes/ (folders with a train.py)."""
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "train.py").is_file())


def resolve_recipe(spec: str) -> Path:
    """A recipe folder from a name under recipes/ or a path to a folder with train.py; an unknown name gets the
    closest known one ("did you mean") and the list."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "train.py").is_file():
        return path.resolve()
    if path.name == spec and (RECIPES_DIR / spec / "train.py").is_file():
        return (RECIPES_DIR / spec).resolve()
    if path.is_dir():
        raise CliError(f"{spec} is a folder without a train.py, not a recipe")
    known = known_recipes()
    close = difflib.get_close_matches(spec, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise CliError(
        f"unknown recipe {spec!r}: {hint}known recipes: {', '.join(known) or '(none)'} "
        f"(in {RECIPES_DIR}); or give the path of a folder with a train.py"
    )


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (what a person would type), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def recipe_spec(recipe_dir: Path) -> str:
    """What to type for this recipe: its name when it is under this repository's recipes/, else its path."""
    return recipe_dir.name if recipe_dir.resolve().parent == RECIPES_DIR.resolve() else shown(recipe_dir)


def recipe_summary(recipe_dir: Path) -> dict[str, str]:
    """name, task (first line of train.py's docstring), model and rewards (config.yaml), read without importing."""
    try:
        doc = ast.get_docstring(ast.parse((recipe_dir / "train.py").read_text())) or ""
    except (OSError, SyntaxError):
        doc = ""
    try:
        config = yaml.safe_load((recipe_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    rewards = config.get("reward_funcs")
    return {
        "recipe": recipe_dir.name,
        "task": doc.strip().splitlines()[0] if doc.strip() else "-",
        "model": str(config.get("model_name_or_path") or "-"),
        "rewards": ", ".join(map(str, rewards)) if isinstance(rewards, list) else str(rewards or "-"),
    }


def cmd_ls(args: argparse.Namespace, rest: list[str]) -> int:
    rows = [recipe_summary(RECIPES_DIR / name) for name in known_recipes()]
    if not rows:
        print(f"no recipes in {RECIPES_DIR}")
        return 0
    columns = ["recipe", "task", "model", "rewards"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    for row in [{c: c.upper() for c in columns}, *rows]:
        print("  ".join(row[c].ljust(widths[c]) for c in columns[:-1]) + "  " + row["rewards"])
    print(f"\n{len(rows)} recipes in {shown(RECIPES_DIR)}/ (model and rewards: each config.yaml)")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# new
# ---------------------------------------------------------------------------------------------------------------------


def this_executable() -> str | None:
    """The vlm-grpo script being run (for a copy's run_8gpu.sh outside this repository), if there is one."""
    candidates = [Path(sys.argv[0]), Path(sys.executable).with_name(PROG)]
    found = shutil.which(PROG)
    candidates += [Path(found)] if found else []
    for candidate in candidates:
        if candidate.name == PROG and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate.resolve())
    return None


def cmd_new(args: argparse.Namespace, rest: list[str]) -> int:
    if rest:
        raise CliError(f"new takes no other arguments: {' '.join(rest)}")
    name = args.name
    if not name.isidentifier() or keyword.iskeyword(name):
        raise CliError(f"NAME must be a Python identifier (letters, digits and _, not first a digit): {name!r}")
    source = resolve_recipe(args.source)
    if args.dest:
        dest = Path(args.dest).expanduser().resolve()
    else:
        dest = (RECIPES_DIR if RECIPES_DIR.is_dir() else Path.cwd()) / name
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CliError(f"{shown(dest)} already exists and is not empty; pick another NAME or --dest")
    if dest.resolve().is_relative_to(source):
        raise CliError(f"--dest {shown(dest)} is inside the recipe it copies ({shown(source)})")
    in_repo = dest.resolve().parent == RECIPES_DIR.resolve()
    recipes_path = f"recipes/{dest.name}" if in_repo else str(dest.resolve())  # absolute: valid from any folder
    written = copy_recipe(source, dest, name, recipes_path, None if in_repo else this_executable())
    spec = recipe_spec(dest)
    print(f"created {shown(dest)} from {shown(source)}: {len(written)} files, '{source.name}' renamed in them")
    print(f"(not copied: {'/, '.join(sorted(NOT_COPIED_AT_TOP))}/; sample.py makes the sample data again)\n")
    steps = [
        (f"{PROG} sample {spec}", "the synthetic data config_smoke.yaml reads"),
        (f"{PROG} validate {shown(dest / 'config_smoke.yaml')}", "config, data rows, batch sizes (seconds)"),
        (f"{PROG} train {spec} --smoke", "CPU smoke run, 2 processes"),
    ]
    width = max(len(command) for command, _ in steps)
    print("next:\n" + "\n".join(f"  {command.ljust(width)}   # {what}" for command, what in steps))
    print(f"then make it your task: data.py (rows), rewards.py, config.yaml; see {shown(dest / 'README.md')}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Running a recipe's scripts
# ---------------------------------------------------------------------------------------------------------------------


def run_script(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run `command` in the foreground; its exit status is ours. Replaces this process where it can (POSIX), so
    signals reach the script (and the launcher's own handling of them) directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execvpe(command[0], command, env if env is not None else os.environ)
    return subprocess.run(command, env=env).returncode


def pop_option(args: list[str], name: str, takes_value: bool) -> tuple[list[str], str | bool | None]:
    """`args` without `--name [value]` / `--name=value` (last one wins), and its value (True for a switch)."""
    kept: list[str] = []
    value: str | bool | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if takes_value and arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}":
            if takes_value:
                if i + 1 >= len(args):
                    raise CliError(f"--{name} needs a value")
                value = args[i + 1]
                i += 1
            else:
                value = True
        else:
            kept.append(arg)
        i += 1
    return kept, value


def cmd_sample(args: argparse.Namespace, rest: list[str]) -> int:
    recipe = resolve_recipe(args.recipe)
    forwarded = args.args + rest
    if (recipe / "sample.py").is_file():
        return run_script([sys.executable, str(recipe / "sample.py"), *forwarded])
    # A recipe from before sample.py existed: its data.py --make-sample OUT_DIR made the sample.
    out_dir = forwarded.pop(0) if forwarded and not forwarded[0].startswith("-") else str(recipe / "data" / "sample")
    return run_script([sys.executable, str(recipe / "data.py"), "--make-sample", out_dir, *forwarded])


def cmd_check(args: argparse.Namespace, rest: list[str]) -> int:
    recipe = resolve_recipe(args.recipe)
    return run_script([sys.executable, str(recipe / "data.py"), "--check", args.source, *args.args, *rest])


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    recipe = resolve_recipe(args.recipe)
    env = dict(os.environ)
    if args.smoke:
        env["SMOKE"] = "1"
    if args.num_gpus is not None:
        if args.num_gpus < 1:
            raise CliError(f"--num_gpus must be >= 1, got {args.num_gpus}")
        env["NUM_GPUS"] = str(args.num_gpus)
    # --config on the command line chooses the training YAML (the launcher's CONFIG): train.py reads only the first
    # --config it is given, and the launcher gives one.
    rest, config = pop_option(rest, "config", takes_value=True)
    if config:
        env["CONFIG"] = str(Path(str(config)).expanduser().resolve())
    env.setdefault("PYTHON", sys.executable)  # the environment vlm-grpo is installed in
    return run_script(["bash", str(LAUNCHER), str(recipe), *rest], env)


def recipe_of_run(run_dir: Path) -> Path:
    """The recipe folder that trained `run_dir` (a run, its final_model/ or a checkpoint-*), from run_config.yaml's
    `Run: {recipe_dir: ...}` (core.training.config.save_resolved_config)."""
    candidates = [run_dir, run_dir / "final_model", run_dir.parent]
    config_path = next((p / "run_config.yaml" for p in candidates if (p / "run_config.yaml").is_file()), None)
    if config_path is None:
        raise CliError(f"{run_dir} is not a training run: no run_config.yaml in it (or in its final_model/)")
    try:
        recorded = ((yaml.safe_load(config_path.read_text()) or {}).get("Run") or {}).get("recipe_dir")
    except (yaml.YAMLError, AttributeError) as exc:
        raise CliError(f"cannot read {config_path}: {exc}") from exc
    if not recorded:
        raise CliError(
            f"{config_path} does not say which recipe trained the run (no Run.recipe_dir: the run is older than "
            f"{PROG} eval); name it: {PROG} eval {run_dir} --recipe RECIPE"
        )
    recipe = Path(recorded)
    if not (recipe / "evaluate.py").is_file():
        raise CliError(
            f"the recipe that trained this run, {recorded} (Run.recipe_dir in {config_path}), has no evaluate.py "
            f"(moved or deleted?); name it: {PROG} eval {run_dir} --recipe RECIPE"
        )
    return recipe


def cmd_eval(args: argparse.Namespace, rest: list[str]) -> int:
    run_dir = Path(args.run_dir).expanduser()
    if not run_dir.is_dir():
        raise CliError(f"{run_dir}: no such run folder")
    forwarded, recipe_name = pop_option(args.args + rest, "recipe", takes_value=True)  # also after RUN_DIR
    recipe_name = recipe_name or args.recipe
    recipe = resolve_recipe(str(recipe_name)) if recipe_name else recipe_of_run(run_dir)
    if not (recipe / "evaluate.py").is_file():
        raise CliError(f"{shown(recipe)} has no evaluate.py")
    return run_script([sys.executable, str(recipe / "evaluate.py"), str(run_dir), *forwarded])


def config_of(spec: str) -> Path:
    """A config YAML from a path, or a RECIPE (its config.yaml)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml"):
        raise CliError(f"{spec}: no such config file")
    return resolve_recipe(spec) / "config.yaml"


def cmd_plan(args: argparse.Namespace, rest: list[str]) -> int:
    from core.plan.memory import main as plan_main

    return plan_main([str(config_of(args.config)), *rest])


def cmd_validate(args: argparse.Namespace, rest: list[str]) -> int:
    from core.tools.validate import validate

    config = config_of(args.config)
    recipe = resolve_recipe(args.recipe) if args.recipe else config.resolve().parent
    if not (recipe / "train.py").is_file():
        raise CliError(f"{shown(config)} is not in a recipe folder (no train.py beside it); add --recipe RECIPE")
    return validate(
        config,
        recipe,
        rest,
        num_gpus=args.num_gpus,
        gpu_memory_gb=args.gpu_memory_gb,
        check_data_rows=not args.skip_data_check,
        recipe_spec=recipe_spec(recipe),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------

# name: (one line for `vlm-grpo --help`, the command's own description, its example)
COMMANDS = {
    "ls": ("list the recipes: task, model, rewards", "List the recipes under recipes/.", "vlm-grpo ls"),
    "new": (
        "copy a recipe to start your own task",
        "Copy a recipe under a new name: no data, outputs or caches, and every file names the copy (recipes/<old> "
        "paths and the old name as a word, in the case it is written in; module paths, hub ids, flags and quoted "
        "data keys that contain it stay). The copy runs anywhere: it imports the installed core.",
        "vlm-grpo new my_task --from grounding\n  vlm-grpo new my_task --from grounding --dest ~/work/my_task",
    ),
    "validate": (
        "check a config in seconds: keys, data, batch, memory",
        "Check a config as train.py would, without loading weights: keys and values (the recipe's own arguments), "
        "the data rows (data.py's check), batch divisibility for the launch, and the memory plan. Exit 0 when "
        "valid, 2 with the problems listed.",
        "vlm-grpo validate recipes/grounding/config.yaml --num_gpus 4 --learning_rate 5e-6",
    ),
    "sample": (
        "make a recipe's synthetic sample data (sample.py)",
        "Make a recipe's synthetic sample data with its sample.py: [DIR] (default <recipe>/data/sample, what "
        "config_smoke.yaml reads) and its flags (--num_samples N, --seed S, ...). Idempotent.",
        "vlm-grpo sample grounding\n  vlm-grpo sample grounding /tmp/sample --num_samples 8",
    ),
    "check": (
        "check a data source's rows (data.py --check)",
        "Validate a data file, folder or hub dataset with the recipe's own checks (its data.py --check SOURCE); "
        "exit 0 with the row count, 2 with every bad row.",
        "vlm-grpo check grounding recipes/grounding/data/sample/train.jsonl",
    ),
    "train": (
        "train a recipe under the launcher of run_8gpu.sh",
        "Train a recipe with the launcher run_8gpu.sh uses (core/tools/launch.sh: accelerate + DeepSpeed, logs, "
        "start-up errors as one message).",
        "vlm-grpo train grounding                      # 8 GPUs, config.yaml\n"
        "  vlm-grpo train grounding --smoke              # CPU, config_smoke.yaml, 2 processes; makes the sample\n"
        "  vlm-grpo train ~/work/my_task --num_gpus 4 --max_steps 50",
    ),
    "eval": (
        "evaluate a finished run (the recipe's evaluate.py)",
        "Evaluate a finished run with the evaluate.py of the recipe that trained it (run_config.yaml's "
        "Run.recipe_dir); writes RUN_DIR/eval/metrics.json, predictions.jsonl and PNGs.",
        "vlm-grpo eval outputs/grounding-20260101-120000 --max_samples 16",
    ),
    "plan": (
        "per-GPU memory of a config's run (core.plan)",
        "Per-GPU memory of the run a config describes, with the cheapest changes that make it fit "
        "(python -m core.plan); real architectures, no weights, no download.",
        "vlm-grpo plan recipes/image_edit/config.yaml --num_gpus 8 --gpu_memory_gb 80",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="GRPO recipes for vision-language models: list, copy, validate, train and evaluate them.",
        epilog="RECIPE: a name under recipes/ (see `vlm-grpo ls`) or the path of a folder with a train.py.\n"
        "Each command has its own --help, with an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    parsers = {}
    for name, (summary, description, example) in COMMANDS.items():
        parsers[name] = sub.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, 100),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
    p = parsers["new"]
    p.add_argument("name", metavar="NAME", help="the new recipe's name (a Python identifier)")
    p.add_argument("--from", dest="source", metavar="RECIPE", required=True, help="the recipe to copy")
    p.add_argument(
        "--dest",
        metavar="DIR",
        help="where to put the copy (default: recipes/NAME in this repository, so `vlm-grpo train NAME` finds it); "
        "anywhere else works too: it imports the installed core",
    )
    p = parsers["validate"]
    p.usage = (
        "vlm-grpo validate [-h] CONFIG [--num_gpus N] [--gpu_memory_gb GB] [--recipe RECIPE] [--skip_data_check]\n"
        + (" " * 25 + "[--<config key> value ...]")
    )
    p.add_argument("config", metavar="CONFIG", help="a config YAML (or a RECIPE: its config.yaml)")
    p.add_argument(
        "--num_gpus",
        type=int,
        default=None,
        metavar="N",
        help="processes of the launch (default: 2 for a tiny smoke model, as SMOKE=1; else 8, as run_8gpu.sh)",
    )
    p.add_argument(
        "--gpu_memory_gb", type=float, default=80.0, metavar="GB", help="memory per GPU for the plan (default 80)"
    )
    p.add_argument("--recipe", metavar="RECIPE", help="the recipe whose train.py reads CONFIG (default: its folder)")
    p.add_argument("--skip_data_check", action="store_true", help="do not read the data (e.g. a hub dataset offline)")
    p.epilog += "\n\nAny other --<config key> value overrides CONFIG, as on train.py's command line."
    for name, what in (("sample", "sample.py"), ("check", "data.py --check SOURCE")):
        p = parsers[name]
        p.add_argument("recipe", metavar="RECIPE", help=RECIPE_HELP)
        if name == "check":
            p.add_argument("source", metavar="SOURCE", help="a data file, folder or hub dataset id")
        p.add_argument("args", nargs=argparse.REMAINDER, metavar="...", help=f"passed on to the recipe's {what}")
        p.usage = f"vlm-grpo {name} [-h] RECIPE " + (
            "[DIR] [sample.py flags ...]" if name == "sample" else "SOURCE [flags ...]"
        )
    p = parsers["train"]
    p.usage = "vlm-grpo train [-h] RECIPE [--smoke] [--num_gpus N] [train.py flags ...]"
    p.add_argument("recipe", metavar="RECIPE", help=RECIPE_HELP)
    p.add_argument("--smoke", action="store_true", help="CPU run of config_smoke.yaml (SMOKE=1); makes the sample")
    p.add_argument(
        "--num_gpus", type=int, default=None, metavar="N", help="processes per machine (NUM_GPUS; default 8, smoke 2)"
    )
    p.epilog += (
        "\n\nOther flags go to train.py and override the config (--config FILE picks another YAML); the launcher's"
        "\nenvironment variables (NUM_MACHINES, ACCELERATE_CONFIG, RUN_NAME, ...) are in core/tools/launch.sh."
    )
    p = parsers["eval"]
    p.usage = "vlm-grpo eval [-h] RUN_DIR [--recipe RECIPE] [evaluate.py flags ...]"
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output_dir (or its final_model/)")
    p.add_argument(
        "--recipe",
        metavar="RECIPE",
        help="evaluate with this recipe's evaluate.py instead of the one run_config.yaml names (Run.recipe_dir)",
    )
    p.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="...", help="passed on to evaluate.py (--max_samples N, ...)"
    )
    p = parsers["plan"]
    p.usage = "vlm-grpo plan [-h] CONFIG [core.plan options] [--<config key> value ...]"
    p.add_argument("config", metavar="CONFIG", help="a config YAML (or a RECIPE: its config.yaml)")
    p.epilog += (
        "\n\nOptions (python -m core.plan): --num_gpus N, --gpu_memory_gb G, --zero 0-3, --accelerate_config FILE,"
        "\n--text_tokens N, --images_per_prompt N, --what_if, --markdown; any --<config key> value overrides CONFIG."
    )
    return parser


HANDLERS = {
    "ls": cmd_ls,
    "new": cmd_new,
    "validate": cmd_validate,
    "sample": cmd_sample,
    "check": cmd_check,
    "train": cmd_train,
    "eval": cmd_eval,
    "plan": cmd_plan,
}


def main(argv: list[str] | None = None) -> int:
    """The `vlm-grpo` console script ([project.scripts] in pyproject.toml); returns the exit status."""
    if hasattr(signal, "SIGPIPE"):  # `vlm-grpo ls | head` ends quietly; the scripts exec'd later get the default too
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    if rest and args.command in ("ls", "new"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return HANDLERS[args.command](args, rest)
    except CliError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
