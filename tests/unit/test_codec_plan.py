"""Codec-aware planning (augment_runner/codec_plan.py): every default GPU profile's
engines x codec x what the process can use, and the engines the operator declares."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from augment_dev.datasets import make_lerobot_v3
from augment_operator.config import (
    LARGE_GPUS,
    SMALL_INFERENCE_GPUS,
    ConfigError,
    OperatorConfig,
    load_config,
)
from augment_operator.jobs import build_job
from augment_runner.codec_plan import (
    CameraPlan,
    GpuCodecSupport,
    VideoPath,
    VideoPlans,
    declared_engines,
    plan_camera,
    this_process,
)
from augment_runner.cpu_budget import this_pod_cpus
from augment_runner.merge import merged_provenance
from augment_runner.pipeline import augment_dataset
from augment_runner.shards import ShardFolder
from augment_runner.video import VideoEncoder, VideoFormat
from augment_spec.contract import ENV_THREADS, ENV_VIDEO_DECODE, ENV_VIDEO_ENCODE
from augment_spec.model import AugmentationType, parse_spec
from augment_spec.video_engines import (
    AV1,
    CODECS,
    H264,
    HEVC,
    NO_ENGINES,
    VideoEngines,
    common_engines,
    engines_for_product,
)

BOTH = GpuCodecSupport(nvcodec=True, cupy=True)
PROFILES = {kind: OperatorConfig().profile_for(kind).video_engines.engines()
            for kind in AugmentationType}


def fmt(codec: str, pix_fmt: str = "yuv420p") -> VideoFormat:
    return VideoFormat(codec, pix_fmt, Fraction(30), 640, 480)


# ---- the facts, per GPU (augment_spec/video_engines.py) ----

@pytest.mark.parametrize(("product", "decode", "encode"), [
    ("NVIDIA-H100-80GB-HBM3", {H264, HEVC}, set()),  # Hopper: no AV1 decode, no NVENC
    ("NVIDIA H200", {H264, HEVC}, set()),
    ("NVIDIA-A100-SXM4-80GB", {H264, HEVC}, set()),
    ("NVIDIA-L4", {H264, HEVC, AV1}, {H264, HEVC, AV1}),  # Ada: AV1 both ways
    ("NVIDIA L40S", {H264, HEVC, AV1}, {H264, HEVC, AV1}),
    ("NVIDIA-A10G", {H264, HEVC, AV1}, {H264, HEVC}),
    ("Tesla-T4", {H264, HEVC}, {H264, HEVC}),
])
def test_each_gpu_has_its_engines(product: str, decode: set[str], encode: set[str]) -> None:
    assert engines_for_product(product) == VideoEngines(frozenset(decode), frozenset(encode))


def test_an_unknown_gpu_has_none_and_spoils_a_common_set() -> None:
    assert engines_for_product("NVIDIA-RTX-9999") is None
    assert common_engines(["NVIDIA-L4", "NVIDIA-RTX-9999"]) == NO_ENGINES
    assert common_engines([]) == NO_ENGINES


def test_the_default_profiles_declare_what_all_their_gpus_have() -> None:
    # T4 lacks AV1, A10G lacks AV1 encode: the small GPUs share H.264 and HEVC.
    assert PROFILES[AugmentationType.deterministic] == common_engines(SMALL_INFERENCE_GPUS) == \
        VideoEngines(frozenset({H264, HEVC}), frozenset({H264, HEVC}))
    # Hopper has no NVENC and no AV1 decode.
    assert PROFILES[AugmentationType.generative] == common_engines(LARGE_GPUS) == \
        VideoEngines(frozenset({H264, HEVC}))


def test_a_profile_declares_its_engines_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  deterministic:\n    videoEngines:\n"
                    "      decode: [av1, h264, av1]\n      encode: [av1]\n")
    engines = load_config(path).profile_for(AugmentationType.deterministic).video_engines
    assert (engines.decode, engines.encode) == (["h264", "av1"], ["av1"])
    path.write_text("profiles:\n  deterministic:\n    videoEngines:\n      decode: [vp9]\n")
    with pytest.raises(ConfigError, match="unknown codec"):
        load_config(path)


def test_the_job_passes_the_profiles_engines_to_the_runner() -> None:
    config = OperatorConfig.model_validate({"profiles": {"deterministic": {
        "videoEngines": {"decode": ["h264", "av1"], "encode": []}}}})
    spec = parse_spec({"project_id": "00000000-0000-0000-0000-000000000001",
                       "dataset_id": "lab/pick"})
    cr = {"metadata": {"name": "pick", "namespace": "lab", "uid": "u-1"}}
    job = build_job(cr, spec, config.profile_for(AugmentationType.deterministic), config)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert declared_engines(env, gpu_name=None) == VideoEngines(frozenset({H264, AV1}))


def test_the_runner_reads_declared_engines_before_its_gpu_name() -> None:
    declared = {ENV_VIDEO_DECODE: "h264", ENV_VIDEO_ENCODE: ""}
    assert declared_engines(declared, "NVIDIA L4") == VideoEngines(frozenset({H264}))
    # Outside a cluster nothing is declared: the GPU's own row, or none.
    assert declared_engines({}, "NVIDIA L4") == engines_for_product("NVIDIA-L4")
    assert declared_engines({}, None) == NO_ENGINES


# ---- the rule: every profile x codec x what the process has ----

# (profile, codec) -> path with PyNvVideoCodec and a CUDA device.
EXPECTED = {
    (AugmentationType.deterministic, H264): VideoPath.nvdec_nvenc,
    (AugmentationType.deterministic, HEVC): VideoPath.nvdec_nvenc,
    (AugmentationType.deterministic, AV1): VideoPath.cpu,  # T4 decodes no AV1
    (AugmentationType.generative, H264): VideoPath.nvdec_cpu,  # no NVENC on Hopper
    (AugmentationType.generative, HEVC): VideoPath.nvdec_cpu,
    (AugmentationType.generative, AV1): VideoPath.cpu,  # no AV1 NVDEC on Hopper
}


@pytest.mark.parametrize("kind", list(AugmentationType))
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("support", [
    BOTH,
    GpuCodecSupport(nvcodec=False, cupy=True),
    GpuCodecSupport(nvcodec=True, cupy=False),
    GpuCodecSupport(nvcodec=False, cupy=False),
])
def test_each_profile_codec_and_availability(
    kind: AugmentationType, codec: str, support: GpuCodecSupport
) -> None:
    path, reason = plan_camera(fmt(codec), PROFILES[kind], support)
    if not support.nvcodec:
        assert (path, reason) == (VideoPath.cpu, "PyNvVideoCodec is not installed (extra `gpu`)")
    elif not support.cupy:
        assert (path, reason) == (VideoPath.cpu, "CuPy is not installed or sees no CUDA device")
    else:
        assert path is EXPECTED[(kind, codec)], reason
        assert codec in reason


@pytest.mark.parametrize(("product", "codec", "path", "words"), [
    ("NVIDIA-H100-80GB-HBM3", AV1, VideoPath.cpu, "NVDEC does not decode av1"),
    ("NVIDIA-H200", H264, VideoPath.nvdec_cpu, "no NVENC"),
    ("NVIDIA-A100-SXM4-80GB", AV1, VideoPath.cpu, "does not decode av1"),
    ("NVIDIA-A10G", AV1, VideoPath.nvdec_cpu, "NVENC does not encode av1"),
    ("NVIDIA-L4", AV1, VideoPath.nvdec_nvenc, "NVDEC and NVENC both handle av1"),
    ("Tesla-T4", AV1, VideoPath.cpu, "NVDEC does not decode av1"),
])
def test_the_reason_names_the_missing_engine(
    product: str, codec: str, path: VideoPath, words: str
) -> None:
    engines = engines_for_product(product)
    assert engines is not None
    planned, reason = plan_camera(fmt(codec), engines, BOTH)
    assert planned is path and words in reason, reason


@pytest.mark.parametrize("pix_fmt", ["gray", "yuv444p", "yuv420p10le"])
def test_video_the_engines_do_not_take_stays_on_the_cpu(pix_fmt: str) -> None:
    path, reason = plan_camera(fmt(H264, pix_fmt), engines_for_product("NVIDIA-L4") or NO_ENGINES,
                               BOTH)
    assert path is VideoPath.cpu and pix_fmt in reason


@pytest.mark.parametrize("support", [BOTH, GpuCodecSupport(nvcodec=False, cupy=False)])
def test_10bit_video_stays_on_the_cpu_with_its_transforms_on_numpy(
    support: GpuCodecSupport,
) -> None:
    """Whatever the process can use, 10-bit video is planned on the CPU, and the reason
    says its 16-bit frames are transformed by the NumPy engine (Augmenter does so)."""
    engines = engines_for_product("NVIDIA-L4") or NO_ENGINES
    path, reason = plan_camera(fmt(H264, "yuv420p10le"), engines, support)
    assert path is VideoPath.cpu
    assert "16-bit frames are transformed by the NumPy engine" in reason, reason


# ---- applying a plan: a missing engine falls back to the CPU, logged and recorded ----

def plan(path: VideoPath) -> CameraPlan:
    return CameraPlan("top", H264, "yuv420p", path, "planned", cpu_threads=1)


def test_a_missing_nvenc_falls_back_to_the_cpu_encoder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plans = VideoPlans({"top": plan(VideoPath.nvdec_nvenc)})
    with caplog.at_level(logging.WARNING, "augment.runner"):
        encoder = plans.encoder("top", tmp_path / "a.mp4", fmt(H264))
    assert isinstance(encoder, VideoEncoder)  # the CPU's: no GPU codec here
    encoder.write(np.zeros((2, 480, 640, 3), np.uint8))
    encoder.close()
    after = plans.get("top")
    assert after is not None and after.path is VideoPath.nvdec_cpu
    assert after.reason.startswith("NVENC did not open, CPU encoder: ")
    assert after.describe() in caplog.text


def test_a_missing_nvdec_falls_back_to_the_cpu_decoder(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    with VideoEncoder(video, VideoFormat(H264, "yuv420p", Fraction(10), 64, 48)) as encoder:
        encoder.write(np.full((3, 48, 64, 3), 90, np.uint8))
    plans = VideoPlans({"top": plan(VideoPath.nvdec_cpu)})
    frames = np.concatenate(list(plans.decode("top", video, fps=10, num_frames=3, start_s=0,
                                              batch_frames=2)))
    assert frames.shape == (3, 48, 64, 3) and abs(int(frames.mean()) - 90) <= 2
    after = plans.get("top")
    assert after is not None and after.path is VideoPath.cpu
    assert after.reason.startswith("NVDEC did not open, CPU decoder: ")
    assert after.to_dict()["path"] == "cpu"


# ---- a run records its plan: provenance, the status report, a merge of shards ----

def test_a_run_reports_and_records_each_cameras_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_lerobot_v3(tmp_path / "src", episodes=1, frames=6, codec="libx264")
    monkeypatch.setenv(ENV_VIDEO_DECODE, "h264")
    monkeypatch.setenv(ENV_VIDEO_ENCODE, "h264")
    monkeypatch.setenv(ENV_THREADS, "6")
    reported: list[list[str]] = []
    spec = parse_spec({"project_id": "00000000-0000-0000-0000-000000000001",
                       "dataset_id": "lab/src", "augment_copies": 2})
    out = augment_dataset(spec, source, tmp_path / "out", video_report=reported.append).output
    (recorded,) = json.loads((out / "meta/augmentation.json").read_text())["video"]
    support = this_process()[1]
    path, reason = plan_camera(fmt(H264), VideoEngines(frozenset({H264}), frozenset({H264})),
                               support)
    assert recorded == {
        "camera": "observation.images.top", "codec": H264, "pix_fmt": "yuv420p",
        "path": path.value, "reason": reason,
        # A decoder and two encoders share the pod's CPUs (6, or fewer cores here).
        "cpu_threads": max(1, min(6, this_pod_cpus()) // 3),
    }
    assert reported == [[CameraPlan(**{**recorded, "path": path}).describe()]]


def test_a_merge_keeps_every_shards_plan(tmp_path: Path) -> None:
    common = {"spec": {"seed": 1}}
    plans = [{"camera": "top", "path": "nvdec-nvenc"}, {"camera": "top", "path": "cpu"}]
    shards = []
    for index, video in enumerate([plans[:1], plans, plans[1:]]):
        root = tmp_path / str(index)
        (root / "meta").mkdir(parents=True)
        episodes = [{"episode_index": index}]
        (root / "meta/augmentation.json").write_text(
            json.dumps({**common, "video": video, "episodes": episodes}))
        shards.append(ShardFolder(root, None))  # type: ignore[arg-type]  # unread here
    merged = merged_provenance(shards)
    assert merged["video"] == plans and len(merged["episodes"]) == 3
