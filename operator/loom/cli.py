"""The `loom` command: lineage queries, the embedded cluster, the demo."""
from __future__ import annotations

import argparse
import json
import sys


def _lineage(args: argparse.Namespace) -> int:
    from loom.api import kind_info
    from loom.backends.storage import Storage
    from loom.config import Settings
    from loom.lineage.graph import LineageError, chain, load_events
    from loom.lineage.record import format_lineage

    if "/" not in args.ref:
        print("expected KIND/NAME, e.g. deployment/iris", file=sys.stderr)
        return 2
    kind, name = args.ref.split("/", 1)
    try:
        kind = kind_info(kind).kind.lower()  # accepts ldep, deployments.loom.dev, Deployment, ...
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    storage = Storage.from_env()
    bucket = Settings.from_env().bucket
    try:
        if args.json:
            print(json.dumps(chain(load_events(storage, args.namespace, bucket), f"{kind}/{name}"), indent=2))
        else:
            print(format_lineage(storage, bucket, args.namespace, f"{kind}/{name}", full_digests=args.full))
    except LineageError as exc:
        print(f"lineage: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom", description="Loom: the whole life of a model, on Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True)
    lin = sub.add_parser("lineage", help="print the chain from a resource back to its data sources")
    lin.add_argument("ref", help="KIND/NAME, e.g. deployment/iris")
    lin.add_argument("-n", "--namespace", default="default")
    lin.add_argument("--full", action="store_true", help="full sha256 digests")
    lin.add_argument("--json", action="store_true", help="the chain as JSON")
    sub.add_parser("demo", help="run the quickstart on the embedded cluster")
    up = sub.add_parser("local", help="the embedded cluster").add_subparsers(dest="action", required=True)
    up.add_parser("up", help="start it and wait")
    args, rest = parser.parse_known_args(argv)
    if args.command == "lineage":
        return _lineage(args)
    if args.command == "demo":
        from loom.demo import main as demo_main

        return demo_main(rest)
    from loom.local.__main__ import main as local_main

    return local_main(["up", *rest])


if __name__ == "__main__":
    sys.exit(main())
