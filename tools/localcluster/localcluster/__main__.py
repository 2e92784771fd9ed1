"""``python -m localcluster up|down|status|build [--all]``: manage the local cluster from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import binaries
from .controlplane import ControlPlane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build (cached) and start the local cluster")
    up.add_argument("--node", choices=("fake", "real"), default="fake",
                    help="fake: kwok nodes only; real: also a kubelet + containerd node")
    sub.add_parser("down", help="stop every process the cluster started and remove its state")
    sub.add_parser("status", help="print what runs, as JSON; exit 1 when the cluster is not ready")
    build = sub.add_parser("build", help="build and cache the binaries without starting anything")
    build.add_argument("--all", action="store_true",
                       help="also the node's images and the operator image (what every test needs, built up front)")
    args = parser.parse_args(argv)

    plane = ControlPlane()
    if args.command == "build":
        for binary, path in binaries.ensure_binaries().items():
            print(f"{binary}\t{path}")
        if args.all:
            from . import images, operator_image

            for reference, spec in images.IMAGES.items():
                print(f"{reference}\t{images.build_image(spec)}")
            print(f"{operator_image.REFERENCE}\t{operator_image.build()}")
        return 0
    if args.command == "up":
        started = time.monotonic()
        state = plane.start()
        if args.node == "real":
            from . import node

            node.start_real_node(state)
        print(f"cluster ready in {time.monotonic() - started:.1f}s; kubeconfig: {state.kubeconfig}")
        print(f"export KUBECONFIG={state.kubeconfig}")
        return 0
    if args.command == "down":
        plane.stop()
        print(f"cluster stopped; removed {plane.state_dir}")
        return 0
    status = plane.status()
    json.dump(status, sys.stdout, indent=2)
    print()
    return 0 if status.get("running") and status.get("ready") else 1


if __name__ == "__main__":
    sys.exit(main())
