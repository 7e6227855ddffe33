"""``python -m loom.local up --dir .loom``: run the embedded cluster until interrupted.

Prints the kubeconfig and env file paths, writes ``<dir>/ready`` once up (and
removes it on the way down). ``--operator`` also runs the Loom operator.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path


def _install_crds(kubeconfig: Path) -> None:
    """Loom's CRDs, so the cluster is ready for Loom resources (and the operator) at once."""
    from kubernetes import config as k8s_config

    from loom.demo import install_crds
    from loom.manifests import Applier

    install_crds(Applier(k8s_config.new_client_from_config(config_file=str(kubeconfig))))


def up(args: argparse.Namespace) -> int:
    from .cluster import EmbeddedCluster

    workdir = Path(args.dir).resolve()
    ready = workdir / "ready"
    ready.unlink(missing_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedCluster(workdir, api_port=args.api_port, s3_port=args.s3_port) as cluster:
        _install_crds(cluster.kubeconfig)
        operator = None
        if args.operator:
            from .operatorproc import OperatorProcess

            operator = OperatorProcess(cluster.kubeconfig, cluster.s3_env, workdir / "operator.log").start()
        print(f"API server:  {cluster.api_url}", flush=True)
        print(f"S3:          {cluster.s3_env['LOOM_S3_ENDPOINT']}", flush=True)
        print(f"kubeconfig:  {cluster.kubeconfig}", flush=True)
        print(f"env file:    {cluster.env_file}   (source it: . {cluster.env_file})", flush=True)
        print(f"pod logs:    {cluster.workdir / 'executor'}", flush=True)
        if operator is not None:
            print(f"operator log: {workdir / 'operator.log'}", flush=True)
        ready.write_text(cluster.api_url + "\n")
        try:
            stop.wait()
        finally:
            ready.unlink(missing_ok=True)
            if operator is not None:
                operator.stop()
    print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loom.local", description="Loom's embedded cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start the API server, S3 and the executor; run until interrupted")
    p.add_argument("--dir", default=".loom", help="working directory (kubeconfig, env, logs)")
    p.add_argument("--api-port", type=int, default=0, help="API server port (default: a free one)")
    p.add_argument("--s3-port", type=int, default=0, help="S3 port (default: a free one)")
    p.add_argument("--operator", action="store_true", help="also run the Loom operator")
    p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "up":
        return up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
