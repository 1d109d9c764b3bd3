"""Sampling a few frames with `core.data.video.load_video_frames` versus decoding every frame and picking afterwards.

    python benchmarks/video_frames.py [--frames 300 --size 256 --sample 8 --repeats 3]

Writes a synthetic clip (moving gradient plus noise, libx264) into a temporary folder, twice: with a key frame every
32 frames (typical of camera and web video) and with x264's default of one every 250 (close to a single GOP here).
For each it times, best of `--repeats`:

* `load_video_frames`  - decord `get_batch` on the sampled indices only (what the recipes use; indices by
                         qwen-vl-utils' rule, whose own `fetch_video` is not used: see core/data/video.py);
* `decord, all`        - decord decodes all frames to RGB (`get_batch(range(n))`), then the sample is picked;
* `PyAV, all`          - PyAV decodes all frames to RGB, then the sample is picked;

checks that the three return the same pixels, and prints the times, the slow-down of decoding everything and the
RGB memory each approach holds. How much the loader saves depends on the key-frame interval: decord seeks to the key
frame before each sampled frame and decodes forward from there (without RGB conversion for the skipped frames).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.video import _decord, load_video_frames, sample_frame_indices  # noqa: E402


def write_clip(path: Path, frames: int, size: int, gop: int | None, seed: int = 0) -> None:
    import av

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        if gop is not None:
            stream.codec_context.gop_size = gop
        for k in range(frames):
            shifted = np.roll(ramp, 3 * k)
            image = np.stack([np.broadcast_to(shifted, (size, size)), np.broadcast_to(shifted[:, None], (size, size))])
            image = np.concatenate([image, np.full((1, size, size), (5 * k) % 256, np.float32)])
            image = image.transpose(1, 2, 0) + rng.normal(0, 12, (size, size, 1))
            frame = np.clip(image, 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def best_of(repeats: int, func: Callable[[], list[np.ndarray]]) -> tuple[float, list[np.ndarray]]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(path: Path, n_sample: int, repeats: int) -> None:
    decord = _decord()
    total = len(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1))
    # A fixed count (qwen-vl-utils' rule, floored to even): the same frames for all three readers.
    indices = sample_frame_indices(total, n_sample, n_sample, num_frames=n_sample)

    def sampled() -> list[np.ndarray]:
        return [np.asarray(image) for image in load_video_frames(path, n_sample, n_sample, num_frames=n_sample)]

    def decord_all() -> list[np.ndarray]:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        everything = reader.get_batch(list(range(len(reader)))).asnumpy()
        return [everything[i] for i in indices]

    def pyav_all() -> list[np.ndarray]:
        import av

        with av.open(str(path)) as container:
            everything = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        return [everything[i] for i in indices]

    t_sampled, frames = best_of(repeats, sampled)
    t_decord, frames_decord = best_of(repeats, decord_all)
    t_pyav, frames_pyav = best_of(repeats, pyav_all)
    same = all(np.array_equal(a, b) for a, b in zip(frames, frames_decord, strict=True))
    close = all(np.abs(a.astype(int) - b.astype(int)).max() <= 2 for a, b in zip(frames, frames_pyav, strict=True))
    rows = (
        (f"load_video_frames, {n_sample} sampled frames", t_sampled, ""),
        (f"decord, all {total} frames, then pick", t_decord, f"x{t_decord / t_sampled:.1f} slower"),
        (f"PyAV, all {total} frames, then pick", t_pyav, f"x{t_pyav / t_sampled:.1f} slower"),
    )
    for label, seconds, note in rows:
        print(f"  {label:<40} {seconds * 1000:8.1f} ms   {note}".rstrip())
    full, kept = total * frames[0].nbytes / 2**20, n_sample * frames[0].nbytes / 2**20
    print(f"  {'RGB frames held at once':<40} {kept:.1f} MiB sampled vs {full:.1f} MiB decoding all")
    agree = f"decord-all {'yes' if same else 'NO'}, PyAV-all {'yes (within 2 levels)' if close else 'NO'}"
    print(f"  {'same frames':<40} {agree}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sample", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for gop, label in ((32, "key frame every 32 frames"), (None, "x264 default, key frame every 250 frames")):
            path = Path(tmp) / f"clip-{gop}.mp4"
            write_clip(path, args.frames, args.size, gop)
            print(f"{args.frames} frames {args.size}x{args.size}, {label} ({path.stat().st_size // 1024} KiB):")
            measure(path, args.sample, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
