"""`curate llm tiny-model --out DIR` and `curate llm serve --model DIR [--port P]`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def register_cli(subparsers) -> None:
    llm = subparsers.add_parser("llm", help="build the tiny local model; serve a model with vLLM on 127.0.0.1")
    sub = llm.add_subparsers(dest="llm_command", required=True)

    p = sub.add_parser("tiny-model",
                       help="build a tiny random-weight Llama-architecture model folder (labels are noise)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_tiny_model)

    p = sub.add_parser("serve", help="start vLLM's OpenAI-compatible server on 127.0.0.1 and wait until stopped")
    p.add_argument("--model", required=True, help="model folder (e.g. from `curate llm tiny-model`)")
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument("--served-model-name", default="tiny-llama", help="the name clients pass as `model`")
    p.add_argument("--max-model-len", type=int, help="context length (default: 8192)")
    p.add_argument("--max-num-seqs", type=int, help="sequences batched together (vLLM's default when unset)")
    p.add_argument("--log", help="server log file (default: a temp file)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    p.set_defaults(handler=cmd_serve)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from pipeline.llm.tiny_model import build_tiny_model

    out = build_tiny_model(args.out, vocab_size=args.vocab_size, seed=args.seed)
    print(f"tiny model written to {out} (random weights: its answers are noise by design)")
    print(f"serve it with: curate llm serve --model {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.llm.server import ServerError, VLLMServer

    kwargs = {"max_model_len": args.max_model_len} if args.max_model_len else {}
    server = VLLMServer(args.model, port=args.port, served_model_name=args.served_model_name,
                        max_num_seqs=args.max_num_seqs, log_path=args.log, ready_timeout_s=args.ready_timeout,
                        **kwargs)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"starting vLLM: pid {server.pid}, log {server.log_path}", flush=True)
        waited = server.wait_ready()
        print(f"ready after {waited:.1f}s: url {server.url} model {args.served_model_name} pid {server.pid}",
              flush=True)
        print(f"use it with: curate annotate --llm-url {server.url} --llm-model {args.served_model_name} ...",
              flush=True)
        while not stop.wait(1.0):
            if server.process.poll() is not None:
                print(f"vLLM exited with code {server.process.returncode}; log {server.log_path}:\n{server.log_tail()}",
                      file=sys.stderr)
                return 1
        print("stopping vLLM (process group)...", flush=True)
        return 0
    except ServerError as exc:
        print(f"curate llm serve: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
