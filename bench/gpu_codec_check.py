"""GPU video check: the planned NVDEC / NVENC paths against the CPU path, on this GPU.

For each codec (H.264, HEVC, AV1) a synthetic clip is encoded on the CPU (PyAV, the
runner's encoder settings), then:
- the plan this GPU gets (augment_runner/codec_plan.py, with the GPU's row of
  augment_spec/video_engines.py, as nothing is declared here);
- where the plan decodes on NVDEC: NVDEC's frames against PyAV's, PSNR >= 40 dB
  (both decode the same bitstream; only the YUV to RGB rounding may differ);
- where the plan encodes on NVENC: the NVENC file decodes (PyAV) to the clip's frame
  count, and its frames match the CPU encoder's within PSNR >= 30 dB (two lossy
  encoders of one source at similar quality); throughput in output frames/s;
- where the plan says the engine is missing: opening it fails with a reason, which is
  the fallback the runner takes (so the plan and the GPU agree).
Throughputs are related to the device's copy bandwidth (device to device, read +
write), as bench_transforms.py does.

    python bench/gpu_codec_check.py [--frames N]   (JSON on stdout, a table on stderr)

Exit status 0 when every check that applies passed (bench/gpu_check.sh runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a script: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from augment_runner import codec_plan
from augment_runner.nvcodec import GpuCodecUnavailable, NvdecReader, NvencEncoder
from augment_runner.video import VideoEncoder, VideoFormat, decode_episode
from bench.bench_transforms import _cupy, device_copy_gbps

NVDEC_MIN_PSNR = 40.0
NVENC_MIN_PSNR = 30.0
SIZE, FPS = (480, 640), Fraction(30)


def clip(frames: int) -> np.ndarray:
    """Moving colour ramps and a moving square: content an encoder has to work for."""
    h, w = SIZE
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        out[i, ..., 0] = (x + 3 * i) % 256
        out[i, ..., 1] = (y + 2 * i) % 256
        out[i, ..., 2] = ((x + y) // 2 + i) % 256
        out[i, 100 + i % 200:160 + i % 200, 200:260] = (255, 255, 255)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decoded(path: Path, frames: int) -> np.ndarray:
    return np.concatenate(list(decode_episode(path, fps=float(FPS), num_frames=frames)))


def check_codec(codec: str, frames: np.ndarray, work: Path, copy_gbps: float) -> dict[str, Any]:
    fmt = VideoFormat(codec, "yuv420p", FPS, SIZE[1], SIZE[0])
    engines, support = codec_plan.this_process()
    path, reason = codec_plan.plan_camera(fmt, engines, support)
    out: dict[str, Any] = {"codec": codec, "plan": path.value, "reason": reason, "ok": True}
    source = work / f"{codec}-cpu.mp4"
    started = time.perf_counter()
    with VideoEncoder(source, fmt) as encoder:
        encoder.write(frames)
    out["cpu_encode_fps"] = round(len(frames) / (time.perf_counter() - started), 1)
    reference = decoded(source, len(frames))
    frame_gb = frames[0].nbytes / 1e9

    try:
        reader = NvdecReader(source)
        started = time.perf_counter()
        gpu = np.concatenate(list(reader.episode(fps=float(FPS), num_frames=len(frames),
                                                 start_s=0.0, batch_frames=32)))
        fps = len(frames) / (time.perf_counter() - started)
        out["nvdec"] = {"psnr_vs_cpu_decode": round(psnr(gpu, reference), 2),
                        "frames_per_s": round(fps, 1),
                        "fraction_of_copy_bandwidth": round(fps * frame_gb / copy_gbps, 5)}
        out["ok"] &= path.gpu_decode and out["nvdec"]["psnr_vs_cpu_decode"] >= NVDEC_MIN_PSNR
    except GpuCodecUnavailable as exc:
        out["nvdec"] = {"unavailable": str(exc)}
        out["ok"] &= not path.gpu_decode  # the plan wanted it: the GPU has less than the table

    target = work / f"{codec}-nvenc.mp4"
    try:
        encoder = NvencEncoder(target, fmt)
    except GpuCodecUnavailable as exc:
        out["nvenc"] = {"unavailable": str(exc)}
        out["ok"] &= not path.gpu_encode
        return out
    started = time.perf_counter()
    with encoder:
        encoder.write(frames)
    fps = len(frames) / (time.perf_counter() - started)
    nvenc = decoded(target, len(frames))  # raises when the file is short or mistimed
    out["nvenc"] = {"psnr_vs_cpu_encode": round(psnr(nvenc, reference), 2),
                    "psnr_vs_source": round(psnr(nvenc, frames), 2),
                    "frames_per_s": round(fps, 1),
                    "fraction_of_copy_bandwidth": round(fps * frame_gb / copy_gbps, 5),
                    "bytes": target.stat().st_size, "cpu_bytes": source.stat().st_size}
    out["ok"] &= path.gpu_encode and out["nvenc"]["psnr_vs_cpu_encode"] >= NVENC_MIN_PSNR
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args(argv)
    cp = _cupy()
    if cp is None:
        print("gpu_codec_check: CuPy sees no CUDA device", file=sys.stderr)
        return 1
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    engines, support = codec_plan.this_process()
    if not support.nvcodec:  # every plan would be the CPU's: nothing GPU-side to check
        print("gpu_codec_check: PyNvVideoCodec is not installed", file=sys.stderr)
        return 1
    copy_gbps = device_copy_gbps(cp)
    frames = clip(args.frames)
    with tempfile.TemporaryDirectory() as work:
        checks = [check_codec(c, frames, Path(work), copy_gbps) for c in ("h264", "hevc", "av1")]
    result = {"gpu": name.decode() if isinstance(name, bytes) else str(name),
              "engines": {"decode": sorted(engines.decode), "encode": sorted(engines.encode)},
              "support": {"nvcodec": support.nvcodec, "cupy": support.cupy},
              "device_copy_gbps": round(copy_gbps, 1), "frames": args.frames,
              "size": f"{SIZE[1]}x{SIZE[0]}", "checks": checks}
    print(json.dumps(result, indent=2))
    for check in checks:
        print(f"{'PASS' if check['ok'] else 'FAIL'} {check['codec']}: {check['plan']} "
              f"({check['reason']}); nvdec {check['nvdec']}; nvenc {check['nvenc']}",
              file=sys.stderr)
    return 0 if all(check["ok"] for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
