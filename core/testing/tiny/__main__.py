"""``python -m core.testing.tiny [family ...]``: build (or find) the tiny checkpoints and print one path per line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from core.testing.tiny import (
    TINY_FAMILIES,
    TINY_PIPELINES,
    TINY_PREFIX,
    _check_family,
    build_tiny_checkpoint,
    is_tiny,
    resolve_model_path,
)


def _iter_names(args: list[str]) -> Iterator[str]:
    for arg in args or TINY_FAMILIES:
        yield arg if is_tiny(arg) else TINY_PREFIX + arg


def main(argv: list[str] | None = None) -> int:
    """``python -m core.testing.tiny [family ...]``: build (or find) the tiny checkpoints and print one path per line.

    Only the paths go to stdout, so shell scripts can do ``MODEL=$(python -m core.testing.tiny qwen2_5_vl)``.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--build-into"] and len(args) == 3:  # internal: see _build_outside_distributed
        with contextlib.redirect_stdout(sys.stderr):
            build_tiny_checkpoint(_check_family(args[2]), args[1])
        return 0
    if any(a in ("-h", "--help") for a in args):
        print(
            f"usage: python -m core.testing.tiny [family ...]   (families: {', '.join(TINY_FAMILIES)}; default: all of "
            f"these; pipelines, built only when named: {', '.join(TINY_PIPELINES)})"
        )
        return 0
    paths = []
    try:
        # Libraries imported while building (e.g. DeepSpeed via accelerate) log to stdout; keep stdout for the paths.
        with contextlib.redirect_stdout(sys.stderr):
            for name in _iter_names(args):
                paths.append(resolve_model_path(name))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(paths), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
