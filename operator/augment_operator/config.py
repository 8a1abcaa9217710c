"""Operator configuration: GPU profiles per augmentation type, and runner settings.

Read from a YAML file (the Helm chart mounts it from a ConfigMap). Every field has a
default, so an empty file gives a working operator for one GPU of a small inference
class (deterministic) and keeps generative augmentation disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from augment_spec.model import (
    GENERATIVE_DISABLED,
    MAX_SHARDS,
    AugmentationSpec,
    AugmentationType,
    KueueName,
    validation_messages,
)
from augment_spec.video_engines import CODECS, VideoEngines, common_engines

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SMALL_INFERENCE_GPUS = ["NVIDIA-L4", "NVIDIA-A10G", "Tesla-T4", "NVIDIA-L40S"]
LARGE_GPUS = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200", "NVIDIA-A100-SXM4-80GB"]
GENERATIVE_DISABLED_HINT = f"{GENERATIVE_DISABLED}; use augmentationType: deterministic"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _gpu_affinity(products: list[str], weight: int = 100) -> dict[str, Any]:
    """Require a GPU node; prefer the listed GPU products (GPU feature discovery labels)."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchExpressions": [
                    {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}],
            }]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": weight,
                "preference": {"matchExpressions": [
                    {"key": "nvidia.com/gpu.product", "operator": "In", "values": products}]},
            }],
        }
    }


class VideoEnginesConfig(_Strict):
    """The codecs the profile's GPU nodes decode (NVDEC) and encode (NVENC) in hardware.
    The runner plans each camera from them (docs/design.md, Video codecs): a codec left
    out is decoded or encoded on the CPU. A GPU that has less than declared costs a
    logged fallback to the CPU, never a failed job."""

    decode: list[str] = Field(default_factory=list)
    encode: list[str] = Field(default_factory=list)

    @field_validator("decode", "encode")
    @classmethod
    def _known_codecs(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(CODECS))
        if unknown:
            raise ValueError(f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(CODECS)}")
        return [codec for codec in CODECS if codec in value]  # one order, no repeats

    @classmethod
    def of(cls, engines: VideoEngines) -> VideoEnginesConfig:
        return cls(decode=sorted(engines.decode), encode=sorted(engines.encode))

    def engines(self) -> VideoEngines:
        return VideoEngines(frozenset(self.decode), frozenset(self.encode))


class GpuProfile(_Strict):
    """Where and how big the runner pod of one augmentation type is."""

    enabled: bool = True
    disabled_message: str = Field(default="", alias="disabledMessage")
    image: str = "ghcr.io/augment-operator/augment-runner:0.1.0"
    image_pull_policy: str = Field(default="IfNotPresent", alias="imagePullPolicy")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    affinity: dict[str, Any] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=lambda: [GPU_TOLERATION])
    resources: dict[str, Any] = Field(default_factory=lambda: {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    })
    runtime_class_name: str | None = Field(default=None, alias="runtimeClassName")
    priority_class_name: str | None = Field(default=None, alias="priorityClassName")
    backoff_limit: int = Field(default=2, ge=0, le=10, alias="backoffLimit")
    active_deadline_seconds: int = Field(default=6 * 3600, ge=60, alias="activeDeadlineSeconds")
    ttl_seconds_after_finished: int = Field(default=86400, ge=0,
                                            alias="ttlSecondsAfterFinished")
    scratch_size_limit: str = Field(default="50Gi", alias="scratchSizeLimit")
    # A runner pod no node takes (PodScheduled False) fails the job after this long: a
    # queue for busy GPUs is normal, a pod no node can ever fit should not wait 6 hours.
    schedule_timeout_seconds: int = Field(default=3600, ge=10, alias="scheduleTimeoutSeconds")
    # A runner pod placed on a node but unable to start (image pull, a missing Secret or
    # ConfigMap, a container the runtime refuses) fails the job after this long.
    start_timeout_seconds: int = Field(default=600, ge=10, alias="startTimeoutSeconds")
    # A sharded job's pods running at once (the spec's shards beyond it wait their turn).
    max_parallel_shards: int = Field(default=8, ge=1, le=MAX_SHARDS, alias="maxParallelShards")
    # A spec without `shards` gets one shard per this many camera frames written
    # (frames x cameras x copies; augment_operator/sizing.py). 300,000 is about 55 minutes
    # of one L4 at the measured cost of a 480p camera frame (bench/README.md).
    shard_camera_frames: int = Field(default=300_000, ge=1, alias="shardCameraFrames")
    # Default: none, so every camera is planned on the CPU until the profile says more.
    video_engines: VideoEnginesConfig = Field(default_factory=VideoEnginesConfig,
                                              alias="videoEngines")
    env: dict[str, str] = Field(default_factory=dict)
    # Kueue (docs/design.md, Queues): the LocalQueue a job of this profile waits in when
    # its spec names none and its namespace has none in OperatorConfig.namespace_queues,
    # and its WorkloadPriorityClass. Unset: no queue, the Job starts at once.
    queue_name: KueueName | None = Field(default=None, alias="queueName")
    workload_priority_class: KueueName | None = Field(default=None,
                                                      alias="workloadPriorityClass")


def _preferring(products: list[str], **fields: Any) -> GpuProfile:
    """A profile that prefers `products` and declares the video engines all of them have
    (the affinity is a preference: a pod may still land on another GPU, whose missing
    engines the runner then finds out and works around)."""
    return GpuProfile(affinity=_gpu_affinity(products),
                      videoEngines=VideoEnginesConfig.of(common_engines(products)), **fields)


def default_profiles() -> dict[AugmentationType, GpuProfile]:
    return {
        AugmentationType.deterministic: _preferring(SMALL_INFERENCE_GPUS),
        AugmentationType.generative: _preferring(
            LARGE_GPUS,
            enabled=False,
            disabledMessage=GENERATIVE_DISABLED_HINT,
            resources={"requests": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"},
                       "limits": {"memory": "256Gi", "nvidia.com/gpu": "8"}},
        ),
    }


class RunnerSettings(_Strict):
    """Settings of every runner pod. Each pod runs as a ServiceAccount of its own job
    (augment_operator.jobs.runner_access), so there is no account to configure here."""

    hub_token_secret_name: str | None = Field(default="augment-hub-token",
                                              alias="hubTokenSecretName")
    hub_token_secret_key: str = Field(default="token", alias="hubTokenSecretKey")
    run_as_user: int = Field(default=65532, alias="runAsUser")
    env: dict[str, str] = Field(default_factory=dict)


class OperatorConfig(_Strict):
    profiles: dict[AugmentationType, GpuProfile] = Field(default_factory=default_profiles)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    resync_seconds: float = Field(default=10, gt=0, alias="resyncSeconds")
    # Kueue LocalQueue per namespace, for jobs whose spec names none: it wins over the
    # GPU profile's queueName (a team's namespace, a team's queue).
    namespace_queues: dict[str, KueueName] = Field(default_factory=dict,
                                                   alias="namespaceQueues")

    def profile_for(self, kind: AugmentationType) -> GpuProfile:
        return self.profiles.get(kind) or default_profiles()[kind]

    def queue_for(self, namespace: str, spec: AugmentationSpec) -> Queue | None:
        """The Kueue queue a job's runner Jobs wait in: the spec's, else the namespace's,
        else the GPU profile's; None: no queue, the Jobs start at once."""
        profile = self.profile_for(spec.augmentation_type)
        name = spec.queue_name or self.namespace_queues.get(namespace) or profile.queue_name
        if not name:
            return None
        return Queue(name, spec.workload_priority_class or profile.workload_priority_class)


@dataclass(frozen=True)
class Queue:
    """A Kueue LocalQueue, and the WorkloadPriorityClass to wait in it with."""

    name: str
    priority_class: str | None = None


class ConfigError(ValueError):
    pass


def load_config(path: Path | None) -> OperatorConfig:
    """Parse the YAML config; profiles named in the file replace the defaults one by one."""
    if path is None:
        return OperatorConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read operator config {path}: {exc}") from None
    profiles: dict[str, Any] = {k.value: v for k, v in default_profiles().items()}
    try:
        for name, value in (raw.pop("profiles", None) or {}).items():
            profiles[name] = GpuProfile.model_validate(value or {})
        return OperatorConfig.model_validate({**raw, "profiles": profiles})
    except ValidationError as exc:
        raise ConfigError(f"invalid operator config {path}: "
                          + "; ".join(validation_messages(exc))) from None
