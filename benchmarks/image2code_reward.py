"""image2code reward throughput: the recipe's sandboxed render+score vs a fresh `python` per program vs a bare
in-process render, on the same programs, measured side by side in one run.

    python benchmarks/image2code_reward.py [--n 24]

Goals tracked: sandbox >= 6x the fresh-subprocess throughput, and within 1.5x of the bare in-process render per
program (the sandbox adds isolation, limits and scoring).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "recipes" / "image2code"))

from rewards import RewardConfig, score_result  # noqa: E402
from sample import make_sample  # noqa: E402

from core.data.records import load_records  # noqa: E402
from core.rewards.sandbox import Sandbox, render_code_in_process  # noqa: E402

FRESH_WRAPPER = """
import io, sys, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
exec(compile(sys.stdin.read(), "<program>", "exec"), {"__name__": "__main__"})
buf = io.BytesIO()
plt.gcf().savefig(buf, format="png")
sys.stdout.buffer.write(buf.getvalue())
"""


def fresh_subprocess(code: str) -> Image.Image:
    out = subprocess.run(
        [sys.executable, "-c", FRESH_WRAPPER],
        input=code.encode(),
        capture_output=True,
        check=True,
        env={"PATH": os.environ.get("PATH", ""), "MPLBACKEND": "Agg"},
        timeout=60,
    )
    return Image.open(io.BytesIO(out.stdout)).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="programs (sample reference code)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        splits = make_sample(Path(tmp) / "sample", num_samples=args.n, seed=0)
        records = [record for file in splits.values() for record in load_records(file)]
        codes = [r["reference_code"] for r in records]
        refs = [Image.open(Path(tmp) / "sample" / r["image_path"]).convert("RGB") for r in records]
    config = RewardConfig()
    render_code_in_process(codes[0])  # warm the in-process imports for a fair baseline

    with Sandbox() as sandbox:
        sandbox.render(codes[:2])  # start the fork server outside the timing
        t = time.perf_counter()
        results = sandbox.render(codes)
        scores = [score_result(res, ref, config)[0] for res, ref in zip(results, refs, strict=True)]
        sandboxed = time.perf_counter() - t
        workers = sandbox.workers if hasattr(sandbox, "workers") else os.cpu_count()
        protections = ", ".join(k for k, v in sandbox.protections.items() if v)

    t = time.perf_counter()
    for code in codes[: max(4, args.n // 4)]:
        fresh_subprocess(code)
    fresh = (time.perf_counter() - t) / max(4, args.n // 4) * args.n

    t = time.perf_counter()
    for code in codes:
        render_code_in_process(code)
    bare = time.perf_counter() - t

    ok = sum(r.status == "ok" for r in results)
    print(f"{args.n} programs (sample reference charts), {os.cpu_count()} cores, sandbox workers {workers}")
    print(
        f"  sandbox render + score        {args.n / sandboxed:7.1f} programs/s   "
        f"({sandboxed / args.n * 1000:6.1f} ms each)"
        f"   {ok}/{args.n} ok, mean reward {sum(scores) / len(scores):.3f}"
    )
    print(f"  fresh python per program      {args.n / fresh:7.1f} programs/s   ({fresh / args.n * 1000:6.1f} ms each)")
    print(f"  bare in-process render        {args.n / bare:7.1f} programs/s   ({bare / args.n * 1000:6.1f} ms each)")
    print(f"  sandbox vs fresh subprocess   x{fresh / sandboxed:.1f} throughput   (goal >= 6)")
    print(f"  sandbox vs bare, per program  x{sandboxed / bare:.2f} time           (goal <= 1.5)")
    print(f"  protections active: {protections}")


if __name__ == "__main__":
    main()
