"""Generate knowledge images with a trained policy and score them by the MMMG protocol, per level and discipline.

Usage:  python recipes/mmmg/evaluate.py RUN_DIR [--max_per_config 8] [--levels ...] [--disciplines ...]
Writes RUN_DIR/eval/ (or --out_dir): metrics.json (overall, per level, per discipline), tables.md, predictions.jsonl
and images.png (a grid of generated images with their fidelity). The judge is the run's (`judge_base_url: local`
starts the project's local judge server again).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from data import build_dataset
from PIL import Image, ImageDraw
from protocol import judge_request, knowledge_fidelity, parse_judge_reply
from rewards import ANSWER_LINE

from core.diffusion import PolicyRenderer, template_system_prompt
from core.evaluation import load_trained_pipeline
from core.judge import JudgeArguments, JudgeClient
from core.judge_server import start_local_judge_if_asked
from core.prompts import encode_prompts
from core.run import resolve_dataset_source

RECIPE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("evaluate")


def table(title: str, groups: dict[str, list[float]]) -> list[str]:
    lines = [f"### {title}", "", "| group | n | knowledge fidelity |", "|---|---|---|"]
    lines += [f"| {g} | {len(v)} | {sum(v) / len(v):.3f} |" for g, v in sorted(groups.items()) if v]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--dataset", help="default: the run's dataset")
    parser.add_argument("--levels", nargs="+")
    parser.add_argument("--disciplines", nargs="+")
    parser.add_argument("--max_per_config", type=int, default=8, help="prompts per level_discipline config")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline, cfg = load_trained_pipeline(args.run_dir, device, edit=False)
    script = cfg["ScriptArguments"]
    model, tokenizer = pipeline.text_encoder, pipeline.tokenizer
    data = build_dataset(
        resolve_dataset_source(args.dataset or script["dataset"], RECIPE_DIR),
        template_system_prompt(pipeline),
        args.levels or script["levels"],
        args.disciplines or script["disciplines"],
        script.get("prompt_column", "prompt"),
        args.max_per_config,
    )
    rows = [data[i] for i in range(len(data))]

    judge_args = JudgeArguments(**{k: v for k, v in script.items() if k.startswith("judge_")})
    server = start_local_judge_if_asked(
        judge_args, finished_run=True
    )  # the run's local judge, if any, is gone: a fresh one
    judge = JudgeClient(judge_args)
    judge.check()

    with torch.no_grad():
        side, tokenizer.padding_side = tokenizer.padding_side, "left"  # batched generation
        enc = encode_prompts(tokenizer, [r["prompt"] for r in rows]).to(device)  # the ids training generates from
        tokenizer.padding_side = side  # the embeddings pad as the pipeline does
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
        completion_ids = [
            [t for t in seq.tolist() if t != tokenizer.pad_token_id] for seq in out[:, enc["input_ids"].shape[1] :]
        ]
    renderer = PolicyRenderer(
        pipeline,
        tokenizer,
        script["num_inference_steps"],
        script["render_seed"],
        script.get("image_height"),
        script.get("image_width"),
        script["true_cfg_scale"],
    )
    images = renderer.render([r["text"] for r in rows], completion_ids, model=model)
    graphs = [json.loads(r["knowledge_graph"]) for r in rows]
    requests = [judge_request(img, kg, r["annotation"] or "") for img, kg, r in zip(images, graphs, rows, strict=True)]
    replies = judge.score(requests, lambda reply: reply if ANSWER_LINE.search(reply) else None)
    judge.close()
    if server is not None:
        server.close()

    records, by_level, by_discipline = [], defaultdict(list), defaultdict(list)
    for row, kg, reply in zip(rows, graphs, replies, strict=True):
        judged = None if reply is None else parse_judge_reply(reply, kg)
        fidelity = None if judged is None else knowledge_fidelity(kg, judged)
        records.append(
            {
                "id": row["id"],
                "level": row["level"],
                "discipline": row["discipline"],
                "text": row["text"],
                "fidelity": fidelity,
                "judged": judged,
            }
        )
        if fidelity is not None:
            by_level[row["level"]].append(fidelity)
            by_discipline[row["discipline"]].append(fidelity)
    scored = [r["fidelity"] for r in records if r["fidelity"] is not None]
    metrics = {
        "num_samples": len(records),
        "num_scored": len(scored),
        "knowledge_fidelity": sum(scored) / len(scored) if scored else float("nan"),
        "per_level": {k: sum(v) / len(v) for k, v in sorted(by_level.items())},
        "per_discipline": {k: sum(v) / len(v) for k, v in sorted(by_discipline.items())},
    }
    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "tables.md").write_text(
        "\n".join(
            [
                f"# MMMG knowledge fidelity: `{args.run_dir}`",
                "",
                *table("Per level", by_level),
                *table("Per discipline", by_discipline),
            ]
        )
    )
    with open(out_dir / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    cell, cols = 128, 4
    n_rows = max(1, -(-len(images) // cols))
    grid = Image.new("RGB", (cols * cell, n_rows * (cell + 24)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, rec) in enumerate(zip(images, records, strict=True)):
        x, y = (i % cols) * cell, (i // cols) * (cell + 24)
        grid.paste(img.convert("RGB").resize((cell, cell)), (x, y))
        fid = "n/a" if rec["fidelity"] is None else f"{rec['fidelity']:.2f}"
        draw.text((x + 2, y + cell + 4), f"{rec['level'][:10]}/{rec['discipline'][:8]} {fid}", fill=(0, 0, 0))
    grid.save(out_dir / "images.png")
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out_dir}")
    return metrics


if __name__ == "__main__":
    main()
