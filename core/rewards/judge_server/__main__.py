"""`python -m core.rewards.judge_server [--port 8765] [--latency 0.05] ...`: serve the local judge until Ctrl-C."""

from __future__ import annotations

import argparse
import time

from core.rewards.judge_server.server import start_judge_server


def _add(parser: argparse.ArgumentParser, flag: str, **settings) -> None:
    """`flag` in snake_case, as every script spells it; its old kebab spelling still works, hidden from --help."""
    action = parser.add_argument(flag, **settings)
    kebab = flag.replace("_", "-")
    if kebab != flag:
        settings.pop("help", None)
        settings.pop("default", None)
        parser.add_argument(kebab, dest=action.dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **settings)


def main(argv: list[str] | None = None) -> None:
    """CLI: serve until Ctrl-C and print the base URL to point `judge_base_url` at."""
    parser = argparse.ArgumentParser(
        prog="python -m core.rewards.judge_server",
        description="A local OpenAI-compatible judge: real HTTP on 127.0.0.1, deterministic pixel scores, injectable "
        "faults.",
    )
    _add(parser, "--host", default="127.0.0.1")
    _add(parser, "--port", type=int, default=8765, help="0 picks a free port")
    _add(parser, "--model", default="local-judge", help="the model name the server answers to")
    _add(parser, "--latency", type=float, default=0.0, help="seconds every chat request sleeps")
    _add(parser, "--fail_first_attempts", type=int, default=0, help="429 for the first N attempts per request")
    _add(parser, "--error_rate", type=float, default=0.0, help="fraction of requests (by hash) answered 500")
    _add(parser, "--timeout_sleep", type=float, default=10.0, help="seconds a [judge:timeout] request hangs")
    _add(parser, "--api_key", default=None, help="require this bearer token (default: any non-empty one)")
    args = parser.parse_args(argv)
    handle = start_judge_server(
        args.model,
        args.latency,
        host=args.host,
        port=args.port,
        fail_first_attempts=args.fail_first_attempts,
        error_rate=args.error_rate,
        timeout_sleep_s=args.timeout_sleep,
        api_key=args.api_key,
    )
    print(
        f"local judge {handle.model!r} serving at {handle.url}  (judge_base_url: {handle.url}; Ctrl-C stops)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        handle.close()
        print(f"stopped; served {handle.stats.snapshot()}")


if __name__ == "__main__":
    main()
