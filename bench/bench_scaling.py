"""Scale out: one dataset over N runner pods, on the embedded cluster, and on paper.

`run(results, quick)` adds `results["scaling"]`. On a real control plane with fake L4
GPU nodes (one per shard at the largest N) whose pods run as local processes (the pod
executor), with the Helm chart's operator and the local Hub, one LeRobot v3.0 dataset
is augmented by an AugmentationJob at each N (1, 2, 4; a separate output each):

- wall time: from `kubectl apply` to the CR's Succeeded, as a user waits for it;
- the finalize step's share: its pod's run time (the kubelet's startedAt to finishedAt,
  whole seconds) over the wall time; N = 1 has no finalize step;
- the shard pods' run times (the same clock), slowest first.

All pods share the machine's cores: on the 2-core development machine, N pods do not
get N times the CPU, so the wall time cannot fall like 1/N here; the figure shows what
sharding costs (pod starts, staging commits, the merge) rather than what it gains.

On paper: the expected time for a 1,000-episode, 3-camera 480p dataset on 8 L4 nodes,
from the pipeline benchmark's measured per-frame cost (see `estimate`).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import CRD_FILE, ensure_normal_scheduling, usable_cores

NAMESPACE = "bench-scale"
SOURCE = "robotics-lab/scale-source"
PROJECT = "3f2b8c1e-6a4d-4e8b-9c2a-1d5e7f9a0b3c"


@dataclass(frozen=True)
class ScalingConfig:
    episodes: int = 64
    frames: int = 20  # per episode
    height: int = 48
    width: int = 64
    copies: int = 2
    shards: tuple[int, ...] = (1, 2, 4)
    timeout_s: float = 900  # per job


QUICK = ScalingConfig(episodes=16, frames=10, shards=(1, 2))


@dataclass(frozen=True)
class PaperDataset:
    """The dataset of the estimate: what bench/README.md states."""

    episodes: int = 1000
    frames_per_episode: int = 300  # 10 s at 30 fps
    cameras: int = 3
    copies: int = 3
    nodes: int = 8  # L4 nodes, one shard pod each at a time


def run(results: dict[str, Any], quick: bool, config: ScalingConfig | None = None,
        pipeline: dict[str, Any] | None = None) -> None:
    """`pipeline`: the pipeline benchmark's results the estimate uses (this run's, or
    the ones recorded in bench/results.json)."""
    from augment_dev.cluster import DEFAULT_NODES, EmbeddedCluster
    from augment_dev.datasets import make_lerobot_v3

    cfg = config or (QUICK if quick else ScalingConfig())
    l4, cpu = DEFAULT_NODES[0], DEFAULT_NODES[2]
    # One L4 node per shard at the largest N, and a CPU node for the operator.
    nodes = (*(
        type(l4)(f"gpu-l4-{k}", cpu=l4.cpu, memory=l4.memory, gpus=1,
                 gpu_product=l4.gpu_product, gpu_memory_mib=l4.gpu_memory_mib,
                 instance_type=l4.instance_type, extra_labels=l4.extra_labels)
        for k in range(max(cfg.shards))
    ), cpu)
    ensure_normal_scheduling()
    runs: list[dict[str, Any]] = []
    with EmbeddedCluster(nodes=nodes) as cluster:
        cluster.kubectl("apply", "-f", str(CRD_FILE))
        cluster.kubectl("wait", "--for=condition=established", "--timeout=60s",
                        "crd/augmentationjobs.augment.dev")
        stack = _stack(cluster)
        with stack:
            source = Path(tempfile.mkdtemp(prefix="bench-scale-")) / "source"
            make_lerobot_v3(source, episodes=cfg.episodes, frames=cfg.frames,
                            codec="libx264", size=(cfg.height, cfg.width))
            stack.hub.seed(SOURCE, source)
            for shards in cfg.shards:
                runs.append(_one(stack, cfg, shards))
    base = runs[0]["wall_s"]
    for row in runs:
        row["speedup_vs_1"] = round(base / row["wall_s"], 2) if row["wall_s"] else None
    results["scaling"] = {
        "config": asdict(cfg),
        "cores": usable_cores(),
        "runs": runs,
        "paper": estimate(pipeline, runs),
    }


def _stack(cluster: Any) -> Any:
    from augment_dev.stack import Stack, StackOptions

    return Stack(cluster, StackOptions(namespace=NAMESPACE, release=NAMESPACE, api=False))


def _one(stack: Any, cfg: ScalingConfig, shards: int) -> dict[str, Any]:
    name = f"scale-{shards}"
    manifest = {
        "apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
        "metadata": {"name": name},
        "spec": {"projectId": PROJECT, "datasetId": SOURCE,
                 "outputDatasetId": f"robotics-lab/scale-{shards}",
                 "augmentTransforms": "lighting,noise", "augmentCopies": cfg.copies,
                 "augmentSeed": 7, "shards": shards},
    }
    started = time.monotonic()
    stack.apply(manifest)
    cr = stack.wait_phase(name, {"Succeeded", "Failed"}, timeout=cfg.timeout_s)
    wall = time.monotonic() - started
    if cr["status"]["phase"] != "Succeeded":
        raise RuntimeError(f"{name} failed: {cr['status'].get('message')}")
    pods = stack.pods_of(name)
    finalize = [_ran(p) for p in pods if _job_of(p).endswith("-merge")]
    runners = sorted((_ran(p) for p in pods if _job_of(p).endswith("-run")), reverse=True)
    finalize_s = finalize[0] if finalize else 0.0
    return {
        "shards": shards,
        "wall_s": round(wall, 1),
        "finalize_s": finalize_s,
        "finalize_share": round(finalize_s / wall, 3) if wall else None,
        "runner_pods_s": runners,
        "output_episodes": cfg.episodes * (1 + cfg.copies),
    }


def _job_of(pod: dict[str, Any]) -> str:
    return str(pod["metadata"].get("labels", {}).get("job-name", ""))


def _ran(pod: dict[str, Any]) -> float:
    """Seconds the pod's container ran, by the kubelet's clock (whole seconds)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        done = (status.get("state") or {}).get("terminated") or {}
        if done.get("startedAt") and done.get("finishedAt"):
            begin, end = (dt.datetime.fromisoformat(done[k].replace("Z", "+00:00"))
                          for k in ("startedAt", "finishedAt"))
            return (end - begin).total_seconds()
    return 0.0


def estimate(pipeline: dict[str, Any] | None, runs: list[dict[str, Any]],
             paper: PaperDataset = PaperDataset()) -> dict[str, Any]:
    """The expected wall time of `paper` on its nodes, from measured costs:

    - per camera frame, the pipeline benchmark's 480p H.264 pipeline time (idle) less its
      transforms (on an L4 the transforms run on the GPU; decoding and encoding stay
      on the pod's CPU cores, 2 by the default profile, as on the machine measured),
      for its number of copies, scaled to the paper's copies by the encode share;
    - the shards: one per node (8 at a time, the profile's maxParallelShards), so the
      augmenting time is the total over the nodes;
    - the finalize step: the measured finalize seconds per output episode at the
      largest N, times the paper's output episodes (it moves files; Hub transfer
      time, which depends on the network, is not in it).
    """
    sizes = (pipeline or {}).get("sizes") or {}
    size = "480p" if "480p" in sizes else next(iter(sizes), None)  # quick runs: smaller
    if pipeline is None or size is None or "libx264" not in sizes[size]:
        return {"error": "needs the pipeline benchmark's libx264 figures"}
    seconds, cfg = sizes[size]["libx264"]["idle"]["seconds"], pipeline["config"]
    per_frame = (seconds["pipeline"] - seconds["transforms"]) / cfg["frames"]
    # Decoding is once per frame, encoding once per copy: scale the encode part.
    decode = seconds["decode"] / cfg["frames"]
    per_frame_paper = decode + (per_frame - decode) * paper.copies / cfg["copies"]
    camera_frames = paper.episodes * paper.frames_per_episode * paper.cameras
    augment_s = camera_frames * per_frame_paper / paper.nodes
    sharded = [r for r in runs if r["shards"] > 1 and r["finalize_s"]]
    per_episode = (sharded[-1]["finalize_s"] / sharded[-1]["output_episodes"]) if sharded else 0.0
    finalize_s = per_episode * paper.episodes * (1 + paper.copies)
    return {
        "dataset": asdict(paper),
        "pipeline_size": size,
        "per_camera_frame_ms": round(per_frame_paper * 1000, 1),
        "camera_frames": camera_frames,
        "augment_s": round(augment_s),
        "finalize_s": round(finalize_s),
        "total_s": round(augment_s + finalize_s),
        "one_node_s": round(augment_s * paper.nodes + finalize_s),
    }
