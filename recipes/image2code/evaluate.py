"""Evaluate a finished (or checkpointed) run: execution success, image similarity, overall score, code quality.

Usage:  python recipes/image2code/evaluate.py RUN_DIR [--dataset_name FILE] [--images_root DIR] [--max_samples N]
            [--batch_size 4] [--max_new_tokens 768] [--generate_examples --max_examples 8] [--out_dir DIR]
            (the shared flags: core/evaluation/cli.py)
Writes RUN_DIR/eval/ (or --out_dir): metrics.json and predictions.jsonl; with --generate_examples also
examples.png (reference | generated, with scores) and report.md. Programs run in the same sandbox as in training;
`reward` is the total of the built-in rewards with the run's weights, as training summed them.
"""

from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path
from typing import Any

from data import build_dataset
from PIL import Image, ImageDraw
from rewards import RewardConfig, effective_status, extract_code, run_reward_weights, score_result

from core.errors import install_error_hook
from core.evaluation.cli import (
    batches,
    data_source,
    eval_device,
    eval_parser,
    output_dir,
    parse_eval_args,
    report,
    write_results,
)
from core.evaluation.loading import generate_greedy, load_trained_policy
from core.rewards.sandbox import Sandbox, SandboxLimits
from core.training.run import resolve_input_path

RECIPE_DIR = Path(__file__).resolve().parent
BRANCHES = (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.BoolOp, ast.IfExp, ast.comprehension, ast.ExceptHandler)


def code_quality(code: str) -> dict[str, Any]:
    """Length, a cyclomatic-complexity equivalent (1 + branch points) and the modules imported; None if unparsable."""
    lines = [line for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {"lines": len(lines), "chars": len(code), "complexity": None, "imports": []}
    imports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module.split(".")[0])
    complexity = 1 + sum(isinstance(node, BRANCHES) for node in ast.walk(tree))
    return {"lines": len(lines), "chars": len(code), "complexity": complexity, "imports": sorted(imports)}


def render_and_score(
    sandbox: Sandbox, codes: list[str], images: list[Image.Image], config: RewardConfig, weights: dict[str, float]
) -> list[tuple[Any, float, str, dict[str, float] | None]]:
    """(result, reward, status, similarity) per program; each is scored in the sandbox's pool as soon as it is
    rendered (`Sandbox.map`), so the batch takes its slowest program's time, not its renders plus every score."""
    return sandbox.map(codes, lambda i, result: (result, *score_result(result, images[i], config, weights)))


def draw_examples(records: list[dict], refs: list[Image.Image], gens: list[Image.Image | None], path: Path) -> None:
    cell, text_h = 200, 34
    sheet = Image.new("RGB", (2 * cell, len(records) * (cell + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (rec, ref, gen) in enumerate(zip(records, refs, gens, strict=True)):
        y = i * (cell + text_h)
        for x, img in ((0, ref), (cell, gen)):
            if img is None:
                draw.rectangle([x + 4, y + 4, x + cell - 4, y + cell - 4], outline=(200, 0, 0))
                draw.text((x + 10, y + cell // 2), rec["status"], fill=(200, 0, 0))
                continue
            thumb = img.convert("RGB")
            thumb.thumbnail((cell, cell))
            sheet.paste(thumb, (x, y))
        sim = rec["similarity"]["combined"] if rec["similarity"] else 0.0
        draw.text(
            (4, y + cell + 2),
            f"{rec['id']}  {rec['status']}  similarity {sim:.2f}  reward {rec['reward']:.2f}",
            fill=(0, 0, 0),
        )
    sheet.save(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = eval_parser(__doc__, batch_size=4, max_new_tokens=768, root_flag="images_root")
    parser.add_argument("--generate_examples", action="store_true", help="write examples.png and report.md")
    parser.add_argument("--max_examples", type=int, default=8)
    args = parse_eval_args(parser, argv)

    model, processor, _, cfg = load_trained_policy(args.run_dir, eval_device())
    script = cfg["ScriptArguments"]
    data_file = data_source(args, script, RECIPE_DIR)
    # image_path is relative to images_root, else to the data file's own folder (data.py's default)
    images_root = resolve_input_path(args.images_root or script.get("images_root"), RECIPE_DIR)
    dataset = build_dataset(data_file, images_root, script.get("system_prompt"), args.max_samples)
    config = RewardConfig.from_object(argparse.Namespace(**script))
    weights = run_reward_weights(script, cfg.get("GRPOConfig"))
    limits = SandboxLimits(
        wall_s=script["sandbox_wall_s"], cpu_s=script["sandbox_wall_s"], memory_mb=script["sandbox_memory_mb"]
    )

    records: list[dict] = []
    refs: list[Image.Image] = []
    gens: list[Image.Image | None] = []
    with Sandbox(limits, workers=script.get("sandbox_workers")) as sandbox:
        for rows in batches(dataset, args.batch_size):
            codes = [extract_code(text) for text in generate_greedy(model, processor, rows, args.max_new_tokens)]
            scored = render_and_score(sandbox, codes, [row["image"] for row in rows], config, weights)
            for row, code, (result, reward, status, similarity) in zip(rows, codes, scored, strict=True):
                records.append(
                    {
                        "id": row["id"],
                        "status": status,
                        "reward": reward,
                        "similarity": similarity,
                        "quality": code_quality(code),
                        "code": code,
                        "error": result.error,
                    }
                )
                if len(refs) < args.max_examples:
                    refs.append(row["image"])
                    gens.append(result.image if effective_status(result) == "ok" else None)

    n = max(len(records), 1)
    ok = [r for r in records if r["status"] == "ok"]
    components = sorted({k for r in ok for k in (r["similarity"] or {})})
    statuses = sorted({r["status"] for r in records})
    parsed = [r["quality"]["complexity"] for r in records if r["quality"]["complexity"] is not None]
    imports: dict[str, int] = {}
    for r in records:
        for module in r["quality"]["imports"]:
            imports[module] = imports.get(module, 0) + 1
    metrics: dict[str, Any] = {
        "num_samples": len(records),
        "execution_success_rate": len(ok) / n,
        "status_rates": {s: sum(r["status"] == s for r in records) / n for s in statuses},
        "mean_similarity": sum(r["similarity"]["combined"] for r in ok if r["similarity"]) / len(ok) if ok else 0.0,
        "similarity_components": {
            c: sum(r["similarity"][c] for r in ok if r["similarity"]) / len(ok) for c in components if ok
        },
        "overall_score": sum(r["reward"] for r in records) / n,
        "code_quality": {
            "mean_lines": sum(r["quality"]["lines"] for r in records) / n,
            "mean_chars": sum(r["quality"]["chars"] for r in records) / n,
            "mean_complexity": sum(parsed) / len(parsed) if parsed else math.nan,
            "imports_used": dict(sorted(imports.items(), key=lambda kv: -kv[1])),
        },
    }
    out_dir = output_dir(args)
    written = write_results(out_dir, metrics, records, {"data_file": data_file, "reward_weights": weights})
    if args.generate_examples:
        draw_examples(records[: len(refs)], refs, gens, out_dir / "examples.png")
        (out_dir / "report.md").write_text(report_markdown(args.run_dir, metrics, records[: len(refs)]))
        written += [out_dir / "examples.png", out_dir / "report.md"]
    report(metrics, written)
    return {**metrics, "data_file": data_file}


def report_markdown(run_dir: Path, metrics: dict[str, Any], examples: list[dict]) -> str:
    """report.md: the headline numbers, examples.png, and each example's status, reward and code."""
    lines = [
        f"# image2code evaluation of `{run_dir}`",
        "",
        f"- samples: {metrics['num_samples']}; execution success: {metrics['execution_success_rate']:.1%}",
        f"- mean similarity (ok programs): {metrics['mean_similarity']:.3f}; overall score: "
        f"{metrics['overall_score']:.3f}",
        "",
        "![examples](examples.png)",
        "",
    ]
    for rec in examples:
        lines += [f"## {rec['id']}: {rec['status']}, reward {rec['reward']:.2f}", "", "```python", rec["code"][:2000]]
        lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
