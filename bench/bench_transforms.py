"""Transform throughput: our engine against albumentations and a naive Pillow loop.

`run(results, quick)` adds `results["transforms"]` and returns `results`; it writes no
files. `python bench/bench_transforms.py [--quick]` prints the same as JSON on stdout
and a short table on stderr.

Every implementation gets the same frames, in the same process, with the same
parameters, and is timed as best of several runs (the machine may be shared). Ratios
come first: ours / albumentations and ours / naive, in frames per second; beside them,
at one thread, albumentations' CPU time per frame / ours (`time.thread_time` of the
same runs), which other work on a shared machine moves far less than wall time.

What each side does (and where it differs):
- ours: `Augmenter` on NumPy (all cores; also timed with one thread), and on CuPy when a
  device is present: device-resident batches for throughput against the measured
  device-to-device copy bandwidth, and host-to-host including transfers.
- albumentations, frame by frame (its usual use; its `images=` batch API shares one
  noise field across the batch, which is less work than fresh noise per frame):
  lighting = RandomBrightnessContrast with alpha = B*C and beta = B*(1-C) times the
  image mean (our affine, but about the mean of all channels instead of the luma mean)
  + PlanckianJitter(blackbody) (the temperature is drawn from [K, 6000] or [6000, K]
  because the transform requires its range to contain 6000 K: same cost);
  noise = GaussNoise with the same sigma; blur = GaussianBlur with the same kernel size
  and sigma (OpenCV, on uint8); occlusion = CoarseDropout, one hole of the same size
  at a random place, grey fill.
- naive: per frame, Pillow ImageEnhance Brightness + Contrast, a colour matrix for the
  temperature, float64 NumPy noise, ImageFilter.GaussianBlur (Pillow's box-blur
  approximation), ImageDraw rectangle.
- kornia (GPU, when importable): the nearest kornia operations on a CUDA tensor
  (adjust_brightness is additive there; RandomErasing draws its own rectangle).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

if not __package__:  # run as a script (bench/gpu_check.sh): make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from augment_runner import backend
from augment_runner.transforms import (
    Augmenter,
    CopyParams,
    color_temp_gains,
    gaussian_kernel,
    occlusion_pixels,
)
from augment_spec.model import Transform
from bench.common import competing_load, load_average, usable_cores, verdict

RESOLUTIONS = {"480p": (480, 640), "720p": (720, 1280)}
ALL = (Transform.lighting, Transform.noise, Transform.blur, Transform.occlusion)
CASES: dict[str, tuple[Transform, ...]] = {
    "lighting": (Transform.lighting,),
    "noise": (Transform.noise,),
    "blur": (Transform.blur,),
    "occlusion": (Transform.occlusion,),
    "stacked": ALL,
}
PARAMS = CopyParams(
    transforms=ALL,
    brightness=10.0,
    contrast=-8.0,
    color_temp=5000,
    noise_sigma=4.0,
    blur_sigma=1.5,  # radius 5: an 11-tap kernel
    occlusion_rects=((0.35, 0.35, 0.3, 0.3),),
    noise_seed=7,
)

Impl = Callable[[np.ndarray], Any]


def synthetic_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Gradients with texture: realistic means and edges, cheap to make."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) % 256], -1)
    texture = rng.integers(-24, 25, (n, height, width, 3), dtype=np.int16)
    return np.clip(base[None] + texture, 0, 255).astype(np.uint8)


def best_seconds(fn: Callable[[], Any], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ----------------------------------------------------------------- implementations


def ours(transforms: tuple[Transform, ...], threads: int | None) -> Impl:
    """Our engine as `augment run` runs it: AUGMENT_THREADS workers (None: every core),
    OpenCV on one thread per call (augment_runner/native_threads.py; our transforms no
    longer call BLAS, whose threads this process cannot change once NumPy is loaded)."""
    aug = Augmenter(_with(transforms), np)

    def call(frames: np.ndarray) -> Any:
        saved = os.environ.get("AUGMENT_THREADS")
        if threads is not None:
            os.environ["AUGMENT_THREADS"] = str(threads)
        try:
            with opencv_threads(1):
                return aug(frames, 0)
        finally:
            if saved is None:
                os.environ.pop("AUGMENT_THREADS", None)
            else:
                os.environ["AUGMENT_THREADS"] = saved

    return call


def _with(transforms: tuple[Transform, ...]) -> CopyParams:
    return replace(PARAMS, transforms=transforms)


def albumentations_impl(transforms: tuple[Transform, ...]) -> Impl:
    import albumentations as A

    p = PARAMS
    b, c = 1 + p.brightness / 100, 1 + p.contrast / 100
    radius = (len(gaussian_kernel(p.blur_sigma)) - 1) // 2
    _, _, hole_w, hole_h = p.occlusion_rects[0]
    steps = {
        Transform.lighting: [
            A.RandomBrightnessContrast(
                brightness_limit=(b * (1 - c),) * 2,
                contrast_limit=(b * c - 1,) * 2,
                brightness_by_max=False,
                p=1,
            ),
            A.PlanckianJitter(
                mode="blackbody",
                temperature_limit=(min(p.color_temp, 6000), max(p.color_temp, 6000)),
                p=1,
            ),
        ],
        Transform.noise: [
            A.GaussNoise(std_range=(p.noise_sigma / 255,) * 2, mean_range=(0, 0), p=1)
        ],
        Transform.blur: [
            A.GaussianBlur(blur_limit=(2 * radius + 1,) * 2, sigma_limit=(p.blur_sigma,) * 2, p=1)
        ],
        Transform.occlusion: [
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(hole_h, hole_h),
                hole_width_range=(hole_w, hole_w),
                fill=128,
                p=1,
            )
        ],
    }
    pipeline = A.Compose([step for t in transforms for step in steps[t]], seed=0)
    return lambda frames: [pipeline(image=f)["image"] for f in frames]


def naive_impl(transforms: tuple[Transform, ...]) -> Impl:
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    p = PARAMS
    g0, g1, g2 = color_temp_gains(p.color_temp)
    matrix = (g0, 0, 0, 0, 0, g1, 0, 0, 0, 0, g2, 0)

    def one(frame: np.ndarray, index: int) -> np.ndarray:
        img = Image.fromarray(frame)
        for t in transforms:
            if t is Transform.lighting:
                img = ImageEnhance.Brightness(img).enhance(1 + p.brightness / 100)
                img = ImageEnhance.Contrast(img).enhance(1 + p.contrast / 100)
                img = img.convert("RGB", matrix=matrix)
            elif t is Transform.noise:
                noise = np.random.default_rng(index).normal(0, p.noise_sigma, frame.shape)
                noisy = np.clip(np.asarray(img, np.float64) + noise, 0, 255)
                img = Image.fromarray(noisy.round().astype(np.uint8))
            elif t is Transform.blur:
                img = img.filter(ImageFilter.GaussianBlur(p.blur_sigma))
            else:
                for y0, y1, x0, x1 in occlusion_pixels(p.occlusion_rects, *frame.shape[:2]):
                    ImageDraw.Draw(img).rectangle((x0, y0, x1 - 1, y1 - 1), fill=(128,) * 3)
        return np.asarray(img)

    return lambda frames: [one(f, i) for i, f in enumerate(frames)]


@contextlib.contextmanager
def opencv_threads(threads: int | None) -> Iterator[None]:
    """OpenCV's own worker threads for the block (None: its default, every core)."""
    import cv2

    saved = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(saved)


def one_thread(impl: Impl) -> Impl:
    """albumentations at one thread: OpenCV's parallel loops (GaussianBlur's among
    them) run on the calling thread."""

    def call(frames: np.ndarray) -> Any:
        with opencv_threads(1):
            return impl(frames)

    return call


def cpu_impls(transforms: tuple[Transform, ...]) -> tuple[dict[str, Impl], dict[str, str]]:
    impls: dict[str, Impl] = {
        "ours_numpy": ours(transforms, None),
        "ours_numpy_1thread": ours(transforms, 1),
        "naive_pillow": naive_impl(transforms),
    }
    missing: dict[str, str] = {}
    try:
        albu = albumentations_impl(transforms)
    except ImportError as exc:
        missing["albumentations"] = f"not installed ({exc.name})"
    else:
        impls["albumentations"] = albu
        impls["albumentations_1thread"] = one_thread(albu)
    return impls, missing


# ---------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuConfig:
    batch: int
    reps: int
    resolutions: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(RESOLUTIONS))
    load_processes: int | None = None  # competing processes when loaded; None: one per core


FULL = CpuConfig(batch=32, reps=5)
QUICK = CpuConfig(batch=16, reps=2)
STATES = ("idle", "loaded")
# Targets for ours / albumentations, at one thread and at all cores, idle and loaded, at
# every resolution: each transform alone at least as fast, the four stacked 1.5x.
TARGET_EACH = 1.0
TARGET_STACKED = 1.5
PAIRS = {  # ratio -> (ours, theirs); the albumentations pairs run at the same thread setting
    "ours_vs_albumentations": ("ours_numpy", "albumentations"),
    "ours_1thread_vs_albumentations_1thread": ("ours_numpy_1thread", "albumentations_1thread"),
    "ours_vs_naive_pillow": ("ours_numpy", "naive_pillow"),
}


ONE_THREAD = ("ours_numpy_1thread", "albumentations_1thread")
"""Implementations that do all their work on the calling thread (AUGMENT_THREADS=1,
OpenCV on one thread), so `time.thread_time` is their whole CPU time."""


def interleaved(
    impls: dict[str, Impl], frames: np.ndarray, reps: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best of `reps` runs of each, interleaved so that a busy moment hits everyone:
    frames per second (wall time), and CPU milliseconds per frame of the one-thread
    implementations (other processes on the machine take their cores' time, which
    moves wall time, but hardly the CPU time of the work itself)."""
    wall = dict.fromkeys(impls, float("inf"))
    cpu = {name: float("inf") for name in impls if name in ONE_THREAD}
    for _ in range(reps):
        for name, impl in impls.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            impl(frames)
            cpu_seconds, wall_seconds = time.thread_time() - start_cpu, time.perf_counter() - start
            wall[name] = min(wall[name], wall_seconds)
            if name in cpu:
                cpu[name] = min(cpu[name], cpu_seconds)
    fps = {name: round(len(frames) / sec, 1) for name, sec in wall.items()}
    return fps, {name: round(1000 * sec / len(frames), 3) for name, sec in cpu.items()}


def bench_cpu(quick: bool, config: CpuConfig | None = None) -> dict[str, Any]:
    """Each case idle, then at once under competing load, so the two states of a row are
    measured seconds apart; the naive loop, a reference only, runs idle."""
    cfg = config or (QUICK if quick else FULL)
    load_before = load_average()
    fps: dict[str, Any] = {state: {} for state in STATES}
    cpu_ms: dict[str, Any] = {state: {} for state in STATES}
    unavailable: dict[str, str] = {}
    load_cores: list[float] = []
    for res, (h, w) in cfg.resolutions.items():
        frames = synthetic_frames(cfg.batch, h, w)
        for state in STATES:
            fps[state][res], cpu_ms[state][res] = {}, {}
        for case, transforms in CASES.items():
            impls, missing = cpu_impls(transforms)
            unavailable |= missing
            for impl in impls.values():
                impl(frames[:2])  # warm up: imports, caches, first-call costs
            fps["idle"][res][case], cpu_ms["idle"][res][case] = interleaved(
                impls, frames, cfg.reps
            )
            del impls["naive_pillow"]
            with competing_load(cfg.load_processes) as load:
                fps["loaded"][res][case], cpu_ms["loaded"][res][case] = interleaved(
                    impls, frames, cfg.reps
                )
            load_cores.append(round(sum(load.cores.values()), 2))
    return {
        "batch_frames": cfg.batch,
        "repetitions": cfg.reps,
        "fps": fps,
        "cpu_ms_per_frame_1thread": cpu_ms,
        "ratios": {state: _ratios(fps[state]) for state in STATES},
        "machine_state": {
            "idle": "no competing process started (the machine itself may be shared: see "
            "the load average)",
            "load_average_1_5_15": {"start": load_before, "end": load_average()},
            "loaded": {
                "competing_processes": cfg.load_processes or usable_cores(),
                "what": "one pure-Python busy loop per process, started before each case's "
                "loaded runs and killed after them",
                "cores_they_used_mean": round(sum(load_cores) / len(load_cores), 2),
                "cores_they_used_min": min(load_cores),
            },
        },
        "unavailable": unavailable,
    }


def cpu_ratios(cpu_ms: dict[str, Any]) -> dict[str, Any]:
    """albumentations' CPU time / ours per frame, at one thread (higher is better, like
    the frame-rate ratios); a figure beside the targets, which are on wall time."""
    ours, theirs = ONE_THREAD
    return {
        state: {
            res: {case: round(row[theirs] / row[ours], 2) for case, row in cases.items()
                  if ours in row and theirs in row}
            for res, cases in by_res.items()
        }
        for state, by_res in cpu_ms.items()
    }  # fmt: skip


def _ratios(fps: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    return {
        res: {
            case: {name: round(row[a] / row[b], 2) for name, (a, b) in PAIRS.items()
                   if a in row and b in row}
            for case, row in cases.items()
        }
        for res, cases in fps.items()
    }  # fmt: skip


def worst_ratio(ratios: dict[str, Any], cases: tuple[str, ...]) -> dict[str, Any] | None:
    """The lowest ours/albumentations ratio over states, resolutions, thread settings and
    `cases`, and where it was; None when albumentations did not run."""
    found = [
        (value, f"{state} {res} {case} {name}")
        for state, by_res in ratios.items()
        for res, by_case in by_res.items()
        for case in cases
        for name, value in by_case.get(case, {}).items()
        if "albumentations" in name
    ]
    if not found:
        return None
    value, where = min(found)
    return {"value": value, "where": where}


def transform_targets(ratios: dict[str, Any]) -> dict[str, Any]:
    """Verdicts of the worst case: each transform alone, and the four stacked."""
    singles = tuple(c for c in CASES if c != "stacked")
    out = {}
    for key, cases, target in (("each", singles, TARGET_EACH),
                               ("stacked", ("stacked",), TARGET_STACKED)):  # fmt: skip
        worst = worst_ratio(ratios, cases)
        if worst is not None:
            out[key] = verdict(worst["value"], target, True) | {"where": worst["where"]}
    return out


# ---------------------------------------------------------------------------- GPU


def _cupy() -> ModuleType | None:
    return next((m for m in backend.available_modules() if backend.is_cupy(m)), None)


def device_copy_gbps(cp: ModuleType, nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device cudaMemcpy, counting read + write: the bandwidth ceiling."""
    src, dst = cp.empty(nbytes, cp.uint8), cp.empty(nbytes, cp.uint8)
    dst.data.copy_from_device(src.data, nbytes)
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(reps):
        dst.data.copy_from_device_async(src.data, nbytes)
    stop.record()
    stop.synchronize()
    seconds = cp.cuda.get_elapsed_time(start, stop) / 1000
    return 2 * nbytes * reps / seconds / 1e9


def device_seconds(cp: ModuleType, fn: Callable[[], Any], reps: int) -> float:
    fn()  # compile and warm the memory pool
    cp.cuda.Device().synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / 1000 / reps


def bench_gpu(quick: bool) -> dict[str, Any]:
    cp = _cupy()
    if cp is None:
        return {"available": False, "reason": "CuPy with a CUDA device is not available"}
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    copy_gbps = device_copy_gbps(cp)
    reps = 10 if quick else 50
    out: dict[str, Any] = {
        "available": True,
        "device": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "copy_gbps_read_plus_write": round(copy_gbps, 1),
        "cases": {},
    }
    for batch in (32, 256):
        for res, (h, w) in RESOLUTIONS.items():
            frames = synthetic_frames(batch, h, w)
            on_device = cp.asarray(frames)
            frame_bytes = 2 * h * w * 3  # read + write of one uint8 frame
            for case, transforms in CASES.items():
                aug = Augmenter(_with(transforms), cp)
                sec = device_seconds(cp, lambda a=aug, d=on_device: a.apply(d, 0), reps)
                host_sec = best_seconds(lambda a=aug, f=frames: a(f, 0), 3)
                fps = batch / sec
                out["cases"][f"{res}/{case}/batch{batch}"] = {
                    "ours_cupy_fps": round(fps, 1),
                    "fraction_of_copy_bandwidth": round(fps * frame_bytes / 1e9 / copy_gbps, 3),
                    "ours_cupy_host_to_host_fps": round(batch / host_sec, 1),
                    "kornia_fps": kornia_fps(cp, on_device, transforms, reps),
                }
    return out


def kornia_fps(cp: ModuleType, frames: Any, transforms: tuple[Transform, ...], reps: int) -> Any:
    """Frames per second of the nearest kornia pipeline, or why there is none."""
    try:
        import kornia
        import torch
    except ImportError as exc:
        return f"not installed ({exc.name})"
    try:
        x = torch.as_tensor(frames, device="cuda")  # shares the CuPy buffer (DLPack)
        step = kornia_pipeline(kornia, torch, transforms)
        step(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            step(x)
        torch.cuda.synchronize()
        return round(len(frames) * reps / (time.perf_counter() - start), 1)
    except Exception as exc:  # report, do not abort the benchmark
        return f"failed: {type(exc).__name__}: {exc}"


def kornia_pipeline(kornia: ModuleType, torch: ModuleType, transforms: tuple[Transform, ...]):
    p = PARAMS
    radius = (len(gaussian_kernel(p.blur_sigma)) - 1) // 2
    gains = torch.tensor(color_temp_gains(p.color_temp), device="cuda").view(1, 3, 1, 1)
    _, _, hole_w, hole_h = p.occlusion_rects[0]
    erase = kornia.augmentation.RandomErasing(
        scale=(hole_w * hole_h,) * 2, ratio=(1.0, 1.0), value=0.5, p=1.0
    )
    noise = kornia.augmentation.RandomGaussianNoise(mean=0.0, std=p.noise_sigma / 255, p=1.0)

    def step(x: Any) -> Any:
        y = x.permute(0, 3, 1, 2).float() / 255
        for t in transforms:
            if t is Transform.lighting:
                y = kornia.enhance.adjust_brightness(y, p.brightness / 100)
                y = kornia.enhance.adjust_contrast(y, 1 + p.contrast / 100)
                y = (y * gains).clamp(0, 1)
            elif t is Transform.noise:
                y = noise(y).clamp(0, 1)
            elif t is Transform.blur:
                size = 2 * radius + 1
                y = kornia.filters.gaussian_blur2d(
                    y, (size, size), (p.blur_sigma, p.blur_sigma), border_type="reflect"
                )
            else:
                y = erase(y)
        return (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    return step


# ------------------------------------------------------------------------------ run


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "augment_threads": os.environ.get("AUGMENT_THREADS"),
        "machine": platform.machine(),
    }
    for name in ("albumentations", "cv2", "PIL", "cupy"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def run(results: dict, quick: bool, config: CpuConfig | None = None) -> dict:
    """Benchmark the transforms; adds results["transforms"] and returns results."""
    cfg = config or (QUICK if quick else FULL)
    started = time.perf_counter()
    cpu = bench_cpu(quick, cfg)
    results["transforms"] = {
        "ratios": cpu["ratios"],
        "targets": transform_targets(cpu.pop("ratios")),
        "fps": cpu.pop("fps"),
        "cpu_ms_per_frame_1thread": cpu["cpu_ms_per_frame_1thread"],
        "cpu_ratios_1thread": cpu_ratios(cpu.pop("cpu_ms_per_frame_1thread")),
        "machine_state": cpu.pop("machine_state"),
        "gpu": bench_gpu(quick),
        "config": {
            "quick": quick,
            **cpu,
            "resolutions": {k: f"{w}x{h}" for k, (h, w) in cfg.resolutions.items()},
            "params": PARAMS.to_dict(),
            "timing": "best of the repetitions, implementations interleaved",
        },
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return results


def _table(report: dict) -> str:
    lines = [f"{'case':<26}{'ours':>9}{'1 thread':>10}{'albu':>9}{'albu 1t':>9}  ratios"]
    for state, by_res in report["fps"].items():
        for res, cases in by_res.items():
            for case, row in cases.items():
                ratios = report["ratios"][state][res][case]
                cpu = report["cpu_ratios_1thread"][state][res].get(case, "-")
                lines.append(
                    f"{state + ' ' + res + ' ' + case:<26}{row['ours_numpy']:>9}"
                    f"{row['ours_numpy_1thread']:>10}{row.get('albumentations', '-'):>9}"
                    f"{row.get('albumentations_1thread', '-'):>9}  "
                    + " ".join(f"{k.removeprefix('ours_')}={v}" for k, v in ratios.items())
                    + f" 1thread_cpu_time={cpu}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    report = run({}, quick="--quick" in sys.argv[1:])["transforms"]
    print(_table(report), file=sys.stderr)
    print(json.dumps({"transforms": report}, indent=2))
