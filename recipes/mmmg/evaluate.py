"""Generate knowledge images with a trained policy and score them by the MMMG protocol, per level and discipline.

Usage:  python recipes/mmmg/evaluate.py RUN_DIR [--dataset_name D] [--max_samples 8] [--levels ...]
            [--disciplines ...] [--batch_size 8] [--max_new_tokens 128] [--out_dir DIR] [--sam2_checkpoint CKPT]
            (the shared flags: core/evaluation/cli.py; --max_samples counts per level_discipline config, as training's
            max_train_samples; --max_per_config is its former name)
Writes RUN_DIR/eval/ (or --out_dir): metrics.json (per level, per discipline, overall, and `protocol`: how the
numbers were produced), tables.md, predictions.jsonl and images.png (each generated image with its level, discipline,
score, prompt and the judge's yes / no on every element and dependency of its knowledge graph).
The judge is the run's (`judge_base_url: local` starts the project's local judge server again).

Scoring is the official MMMG evaluation's (github.com/MMMGBench/MMMG @ 98bb915, `stat_knowledge.py` and
`step3_stat.py`; see protocol.py): a reply with no readable line scores 0, a failed judge call (no reply) is left
out, the score is R x (1 - GED-normalised) with R = 1 unless readability is on (`--sam2_checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data import build_dataset
from PIL import Image
from protocol import (
    SAM2_GENERATOR_SETTINGS,
    SAM2_MODEL_CFG,
    count_regions,
    judge_request,
    knowledge_fidelity,
    mmmg_score,
    official_judgement,
)
from protocol import report as report_tables

from core.diffusion.pipeline import PolicyRenderer, configure_vae, template_system_prompt
from core.errors import install_error_hook
from core.evaluation.cli import (
    data_source,
    eval_device,
    eval_parser,
    output_dir,
    parse_eval_args,
    report,
    run_judge,
    write_results,
)
from core.evaluation.loading import generate_completion_ids, load_trained_pipeline
from core.tools.plots import BLACK, GREY, RIGHT, WRONG, CaptionLine, panel, panel_sheet

RECIPE_DIR = Path(__file__).resolve().parent


PROTOCOL_SOURCE = "github.com/MMMGBench/MMMG@98bb915a645d6d575dea3700a391966bd317c83a (mmmg_eval)"


def table(title: str, means: dict[str, float], counts: dict[str, int]) -> list[str]:
    lines = [f"### {title}", "", "| group | n | MMMG score |", "|---|---|---|"]
    lines += [f"| {g} | {counts[g]} | {means[g]:.3f} |" for g in sorted(means)]
    return [*lines, ""]


def judged_lines(kg: dict[str, Any], judged: dict[str, bool] | None) -> list[CaptionLine]:
    """The judge's verdict on every element and dependency of the knowledge graph, one "yes"/"no" line each (green /
    red): what the score was computed from, so two look-alike images with different scores can be told apart."""
    if judged is None:
        return [CaptionLine("judge: no reply, not scored (left out)", GREY)]
    lines = []
    for heading, keys in (("elements", kg.get("elements") or []), ("dependencies", kg.get("dependencies") or [])):
        if keys:
            lines.append(CaptionLine(f"{heading}:", GREY))
        for key in keys:
            yes = judged.get(key, False)
            lines.append(CaptionLine(f"{'yes' if yes else 'no'}: {key}", RIGHT if yes else WRONG, max_lines=2))
    return lines


def caption(record: dict[str, Any], kg: dict[str, Any]) -> list[CaptionLine]:
    """Under one generated image: level / discipline and score, the prompt, and the judged checklist."""
    score = "not scored" if record["score"] is None else f"score {record['score']:.2f}"
    if record.get("region_count") is not None:  # readability on: score = R x fidelity
        score += f" (fidelity {record['fidelity']:.2f}, {record['region_count']} regions)"
    return [
        CaptionLine(f"{record['level']} / {record['discipline']}: {score}", BLACK),
        CaptionLine(f"prompt: {record['text']}", GREY, max_lines=5),
        *judged_lines(kg, record["judged"]),
    ]


def draw_grid(
    records: list[dict[str, Any]],
    images: list[Image.Image],
    graphs: list[dict[str, Any]],
    path: Path,
    cell: int = 256,
    columns: int = 4,
) -> list[tuple[int, int, int, int]]:
    """images.png: one panel per generated image with `caption` under it. Returns the panels' boxes."""
    panels = [panel(img, caption(rec, kg), width=cell) for img, rec, kg in zip(images, records, graphs, strict=True)]
    legend = [("judge: yes (present in the image)", RIGHT), ("judge: no", WRONG)]
    sheet, boxes = panel_sheet(panels, columns, title=f"MMMG: {len(records)} generated images", legend=legend)
    sheet.save(path)
    return boxes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = eval_parser(
        __doc__,
        batch_size=8,
        max_new_tokens=128,
        max_samples=8,
        max_samples_help="prompts per level_discipline config (keeps the mix, as training's max_train_samples)",
        data_help="default: the run's dataset_name",
    )
    parser.add_alias("--max_per_config", of="--max_samples")
    parser.add_argument("--levels", nargs="+", help="default: the run's levels")
    parser.add_argument("--disciplines", nargs="+", help="default: the run's disciplines")
    parser.add_argument(
        "--sam2_checkpoint", help="SAM2.1 hiera-large checkpoint: readability R on (official generator settings)"
    )
    args = parse_eval_args(parser, argv)

    pipeline, cfg = load_trained_pipeline(args.run_dir, eval_device(), edit=False)
    script = cfg["ScriptArguments"]
    # The run's VAE memory switches (renders as training rendered them; runs from before these keys: off).
    configure_vae(
        pipeline, script.get("vae_tiling", False), script.get("vae_slicing", False), script.get("vae_tile_size")
    )
    model, tokenizer = pipeline.text_encoder, pipeline.tokenizer
    data = build_dataset(
        data_source(args, script, RECIPE_DIR),
        template_system_prompt(pipeline),
        args.levels or script["levels"],
        args.disciplines or script["disciplines"],
        script.get("prompt_column", "prompt"),
        args.max_samples,
    )
    rows = [data[i] for i in range(len(data))]

    with run_judge(script) as judge:  # the run's judge (a local one starts afresh), checked before generating
        # the ids training generates from
        completion_ids = generate_completion_ids(
            model, tokenizer, [r["prompt"] for r in rows], None, args.max_new_tokens, args.batch_size
        )
        renderer = PolicyRenderer(
            pipeline,
            tokenizer,
            script["num_inference_steps"],
            script["render_seed"],
            script.get("image_height"),
            script.get("image_width"),
            script["true_cfg_scale"],
            offload_dit=script.get("offload_dit", False),
        )
        images = renderer.render([r["text"] for r in rows], completion_ids, model=model)
        graphs = [json.loads(r["knowledge_graph"]) for r in rows]
        requests = [
            judge_request(img, r["knowledge_graph"], r["annotation"] or "") for img, r in zip(images, rows, strict=True)
        ]
        replies = judge.score(requests, lambda reply: reply)  # any reply counts (unreadable: 0); no reply: left out
        judge_args = judge.args

    records = []
    for row, kg, reply, img in zip(rows, graphs, replies, images, strict=True):
        judged = None if reply is None else official_judgement(reply, kg)
        fidelity = None if judged is None else knowledge_fidelity(kg, judged)
        regions = None if args.sam2_checkpoint is None else count_regions(img, args.sam2_checkpoint)
        records.append(
            {
                "id": row["id"],
                "level": row["level"],
                "discipline": row["discipline"],
                "text": row["text"],
                "fidelity": fidelity,
                "region_count": regions,
                "score": None if fidelity is None else mmmg_score(fidelity, regions),
                "judged": judged,
            }
        )
    summary = report_tables(records)
    metrics = {
        "num_samples": len(records),
        "num_scored": sum(r["score"] is not None for r in records),
        "mmmg_score": summary["overall"],
        "per_level": summary["per_level"],
        "per_discipline": summary["per_discipline"],
        "protocol": {
            "scorer": f"official MMMG scoring, {PROTOCOL_SOURCE}: stat_knowledge.py reply reading, step3_stat.py "
            "graphs and first optimize_graph_edit_distance value; score = R x (1 - GED-normalised), per level and "
            "per discipline averaged over samples",
            "judge_prompt": "project's own wording (judge_prompt.txt) with the official content: knowledge graph "
            "JSON, newline, annotation; text before image",
            "judge_model": judge_args.judge_model,
            "judge_temperature": judge_args.judge_temperature,
            judge_args.judge_max_tokens_field: judge_args.judge_max_tokens,
            "readability": None
            if args.sam2_checkpoint is None
            else {"model_cfg": SAM2_MODEL_CFG, "generator": SAM2_GENERATOR_SETTINGS, "ocr_merge": False},
            "unreadable_reply": "scored 0 (official)",
            "failed_judge_call": "left out (official: no reply file)",
            "overall": "mean over scored samples (the project's; the official report has per level/discipline only)",
            # The judge reads the project's own prompt wording, so scores can differ from the official judge prompt's.
            "comparable_with_published": False,
            "note": "scoring is the official one, but the judge prompt is the project's own wording: not comparable "
            "with published MMMG numbers",
        },
    }
    out_dir = output_dir(args)
    written = write_results(out_dir, metrics, records)
    (out_dir / "tables.md").write_text(
        "\n".join(
            [
                f"# MMMG score (official scoring): `{args.run_dir}`",
                "",
                *table("Per level", summary["per_level"], summary["count_per_level"]),
                *table("Per discipline", summary["per_discipline"], summary["count_per_discipline"]),
            ]
        )
    )
    draw_grid(records, images, graphs, out_dir / "images.png")
    report(metrics, [*written, out_dir / "tables.md", out_dir / "images.png"])
    return metrics


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
