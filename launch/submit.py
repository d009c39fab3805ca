"""Run the ``rad train`` pipeline on a running Ray cluster (the script ``ray submit`` runs).

    ray up launch/rad.yaml
    ray submit launch/rad.yaml launch/submit.py -- --config launch/configs/tiny.yaml output_dir=/shared/runs/tiny
    ray down launch/rad.yaml

or, on a cluster that is already running (the job server on the head, port 8265, which
listens on the head's 127.0.0.1: ``ray dashboard launch/rad.yaml`` forwards it):

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python launch/submit.py --config launch/configs/tiny.yaml

The cluster runs with Ray's token authentication (docs/security.md); the script reads the
token as Ray does (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) and
stops with one line saying where to put it when there is none.

The script connects to the cluster (``--address``, default ``auto``: ``$RAY_ADDRESS``
or the cluster started on this node), records the cluster it ran on in
``<output_dir>/cluster.json``, and runs exactly ``rad train --config FILE
[overrides]`` with ``rad.resources.ray_address`` set to the same address, so the RAD
stage places its actors on the cluster instead of starting a local one.

``ray submit`` copies this one file to ``~/submit.py`` on the head and runs it
there, so a relative ``--config`` is looked up in the working directory first and
then in the project the head node has installed (``file_mounts`` in rad.yaml put it
at ``~/rad``). ``output_dir`` is relative to the working directory (``~`` under
``ray submit``); on a multi-node cluster point it at storage every node sees, since
the learner actors write checkpoints from whichever node they run on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("rad.launch")

ADDRESS_KEY = "rad.resources.ray_address"


def resolve_config(path: str) -> Path:
    """``path`` as given, else relative to the installed project's root (the head's copy of the repo)."""
    import rad
    from rad.errors import ConfigError

    given = Path(path).expanduser()
    if given.is_file():
        return given
    project_root = Path(rad.__file__).resolve().parent.parent
    candidate = project_root / path
    if not given.is_absolute() and candidate.is_file():
        return candidate
    raise ConfigError(f"--config: {path} is neither a file relative to {Path.cwd()} nor to the project at "
                      f"{project_root}")


def with_address(overrides: list[str], address: str) -> list[str]:
    """The overrides plus ``rad.resources.ray_address=<address>`` unless the user set that key."""
    if any(o.split("=", 1)[0] == ADDRESS_KEY for o in overrides):
        return list(overrides)
    return [*overrides, f"{ADDRESS_KEY}={address}"]


def cluster_record(address: str) -> dict[str, Any]:
    """The connected cluster: address, Ray version, alive nodes and their resources."""
    import ray

    nodes = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]}
             for n in ray.nodes() if n["Alive"]]
    return {"address": address, "gcs_address": ray.get_runtime_context().gcs_address,
            "ray_version": ray.__version__, "nodes": nodes,
            "resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}}


def rad_stage_demand(cfg: Any, gpu_cluster: bool) -> dict[str, float]:
    """CPUs and GPUs the RAD stage's actors reserve (learner, reference, scorer, rollout), as the stage plans
    them (:func:`rad.runtime.roles.role_resources`); engines ask for GPUs only on a cluster with GPUs."""
    from rad.runtime.placement import plan_bundles, total_resources
    from rad.runtime.roles import role_resources

    bundles, _ = plan_bundles(role_resources(cfg.rad.resources, cfg.rad.rollout, [], gpu=gpu_cluster))
    return total_resources(bundles)


def connect(address: str, actor_logs: bool = False) -> None:
    """Join the cluster at ``address`` with its auth token (a one-line error says where to put a missing one);
    ``actor_logs`` (the config's ``logging.actor_logs``) shows the actors' output in the job's log."""
    import ray

    from rad.runtime.ray_auth import require_token

    require_token(address)

    env = {"TOKENIZERS_PARALLELISM": "false"}
    if "RAD_CACHE" in os.environ:
        env["RAD_CACHE"] = os.environ["RAD_CACHE"]
    ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=actor_logs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="submit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="launch/configs/tiny.yaml", help="pipeline config (rad train --config)")
    parser.add_argument("--address", default="auto", help="Ray cluster address ('auto' = $RAY_ADDRESS or this node's)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for rad train")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    from rad.cli import main as rad_main
    from rad.config import load_config
    from rad.errors import RadError
    from rad.pipeline import PipelineConfig

    try:
        config = resolve_config(args.config)
        overrides = with_address(args.overrides, args.address)
        cfg = load_config(PipelineConfig, str(config), overrides)  # fail on a bad config before connecting
        connect(args.address, actor_logs=cfg.logging.actor_logs)
        record = cluster_record(args.address)
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cluster.json").write_text(json.dumps(record, indent=2))
        log.info("connected to %s: %d node(s), %s", record["gcs_address"], len(record["nodes"]), record["resources"])
        if "rad" in cfg.stages:
            demand = rad_stage_demand(cfg, gpu_cluster=record["resources"].get("GPU", 0) > 0)
            short = {k: v for k, v in demand.items() if v > record["resources"].get(k, 0.0)}
            if short:
                # An autoscaling cluster may still add nodes, so this is a warning, not an error.
                log.warning("the RAD stage reserves %s but the cluster has %s now; its actors wait for nodes",
                            demand, record["resources"])
    except RadError as exc:
        print(f"submit.py: error: {exc}", file=sys.stderr)
        return 2
    return rad_main(["train", "--config", str(config), *overrides])


if __name__ == "__main__":
    sys.exit(main())
