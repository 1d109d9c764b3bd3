"""Evaluate a finished (or checkpointed) run: execution success, image similarity, overall score, code quality.

Usage:  python recipes/image2code/evaluate.py RUN_DIR [--data_file FILE] [--max_samples N]
                                                      [--generate_examples --max_examples 8]
Writes RUN_DIR/eval/ (or --out_dir): metrics.json and predictions.jsonl; with --generate_examples also
examples.png (reference | generated, with scores) and report.md. Programs run in the same sandbox as in training.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from data import build_dataset
from PIL import Image, ImageDraw
from rewards import RewardConfig, effective_status, extract_code, score_result

from core.errors import install_error_hook
from core.evaluation.loading import generate_greedy, load_trained_policy
from core.rewards.sandbox import Sandbox, SandboxLimits
from core.training.run import resolve_input_path

RECIPE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("evaluate")
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data_file", help="default: the run's eval_file, else train_file")
    parser.add_argument("--images_root")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=768)
    parser.add_argument("--generate_examples", action="store_true", help="write examples.png and report.md")
    parser.add_argument("--max_examples", type=int, default=8)
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor, _, cfg = load_trained_policy(args.run_dir, device)
    script = cfg["ScriptArguments"]
    data_file = resolve_input_path(args.data_file or script.get("eval_file") or script["train_file"], RECIPE_DIR)
    images_root = resolve_input_path(args.images_root or script.get("images_root"), RECIPE_DIR)
    dataset = build_dataset(data_file, images_root, script.get("system_prompt"), args.max_samples)
    config = RewardConfig.from_object(argparse.Namespace(**script))
    limits = SandboxLimits(
        wall_s=script["sandbox_wall_s"], cpu_s=script["sandbox_wall_s"], memory_mb=script["sandbox_memory_mb"]
    )

    records: list[dict] = []
    refs: list[Image.Image] = []
    gens: list[Image.Image | None] = []
    with Sandbox(limits, workers=script.get("sandbox_workers")) as sandbox:
        for start in range(0, len(dataset), args.batch_size):
            rows = [dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))]
            codes = [extract_code(text) for text in generate_greedy(model, processor, rows, args.max_new_tokens)]
            for row, code, result in zip(rows, codes, sandbox.render(codes), strict=True):
                reward, status, similarity = score_result(result, row["image"], config)
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
            logger.info("evaluated %d/%d", len(records), len(dataset))

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
        "mean_similarity": sum(r["similarity"]["combined"] for r in ok) / len(ok) if ok else 0.0,
        "similarity_components": {c: sum(r["similarity"][c] for r in ok) / len(ok) for c in components if ok},
        "overall_score": sum(r["reward"] for r in records) / n,
        "code_quality": {
            "mean_lines": sum(r["quality"]["lines"] for r in records) / n,
            "mean_chars": sum(r["quality"]["chars"] for r in records) / n,
            "mean_complexity": sum(parsed) / len(parsed) if parsed else math.nan,
            "imports_used": dict(sorted(imports.items(), key=lambda kv: -kv[1])),
        },
        "data_file": data_file,
    }
    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(out_dir / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    if args.generate_examples:
        draw_examples(records[: len(refs)], refs, gens, out_dir / "examples.png")
        lines = [
            f"# image2code evaluation of `{args.run_dir}`",
            "",
            f"- samples: {len(records)}; execution success: {metrics['execution_success_rate']:.1%}",
            f"- mean similarity (ok programs): {metrics['mean_similarity']:.3f}; overall score: "
            f"{metrics['overall_score']:.3f}",
            "",
            "![examples](examples.png)",
            "",
        ]
        for rec in records[: len(refs)]:
            lines += [
                f"## {rec['id']}: {rec['status']}, reward {rec['reward']:.2f}",
                "",
                "```python",
                rec["code"][:2000],
                "```",
                "",
            ]
        (out_dir / "report.md").write_text("\n".join(lines))
    print(json.dumps({k: v for k, v in metrics.items() if k != "data_file"}, indent=2))
    print(f"wrote {out_dir}")
    return metrics


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
