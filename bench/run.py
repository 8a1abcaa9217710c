"""`make bench`: every benchmark in one run, on one machine, written side by side.

    python -m bench.run [--quick] [--only transforms,pipeline,operator,api,images,scaling]
                        [--merge] [--out DIR]

Writes DIR/results.json (everything measured), DIR/results.md (targets first, then
ratios, then absolute figures and the machine) and DIR/results.png, and prints the
markdown. DIR defaults to bench/. The operator and API benchmarks share one embedded
control plane (no pod executor). A benchmark that fails is recorded with its error and
the others still run; the exit status is then 1. The scaling benchmark starts a control
plane of its own, with the pod executor, the chart and the local Hub. --merge keeps the
other sections of DIR/results.json (say, `--only images --merge` after `make images`);
the report names the sections measured later than the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    bench_api,
    bench_images,
    bench_operator,
    bench_pipeline,
    bench_scaling,
    bench_transforms,
)
from bench.common import (
    bench_cluster,
    git_commit,
    load_average,
    machine_info,
    realtime_processes,
    usable_cores,
)

SECTIONS = ("transforms", "pipeline", "operator", "api", "images", "scaling")
BENCH_DIR = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a fast look")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.* go")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other sections of OUT/results.json")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    return args  # fmt: skip


# ------------------------------------------------------------------------ running


def guarded(results: dict, name: str, fn: Callable[[], Any]) -> None:
    """Run one benchmark; a failure is recorded and does not stop the others."""
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    print(f"bench: {name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def run_all(only: list[str], quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_info(), "quick": quick, "sections": only}
    started = time.perf_counter()
    if "transforms" in only:
        guarded(results, "transforms", lambda: bench_transforms.run(results, quick))
    if "pipeline" in only:
        guarded(results, "pipeline", lambda: bench_pipeline.run(results, quick))
    cluster_benches = [s for s in ("operator", "api") if s in only]
    if cluster_benches:
        run_on_cluster(results, cluster_benches, quick)
    if "images" in only:
        guarded(results, "images", lambda: bench_images.run(results, quick))
    if "scaling" in only:
        pipeline = results.get("pipeline") or recorded("pipeline")
        guarded(results, "scaling", lambda: bench_scaling.run(results, quick, pipeline=pipeline))
    results["machine"]["load_average_end"] = load_average()
    results["machine"]["realtime_processes_end"] = realtime_processes()
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    return results


def recorded(section: str) -> dict[str, Any] | None:
    """A section of the recorded bench/results.json, when this run does not measure it."""
    try:
        found = json.loads((BENCH_DIR / "results.json").read_text()).get(section)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def run_on_cluster(results: dict, names: list[str], quick: bool) -> None:
    """Operator first: the API bench then reads a namespace that holds its jobs too."""
    try:
        with bench_cluster(bench_operator.NAMESPACE) as cluster:
            if "operator" in names:
                guarded(results, "operator", lambda: bench_operator.run(results, quick, cluster))
            if "api" in names:
                guarded(results, "api", lambda: bench_api.run(results, quick, cluster))
    except Exception as exc:  # the control plane itself did not start
        for name in names:
            results.setdefault(name, {"error": f"control plane: {type(exc).__name__}: {exc}"})


# ------------------------------------------------------------------------ targets


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with a verdict, in a fixed order, each with its unit."""
    rows = []
    names = {"each": "Transforms: each alone / albumentations, worst case",
             "stacked": "Transforms: four stacked / albumentations, worst case"}  # fmt: skip
    for key, target in results.get("transforms", {}).get("targets", {}).items():
        rows.append((f"{names[key]} ({target['where']})", "x", target))
    for codec, target in results.get("pipeline", {}).get("targets", {}).items():
        rows.append((f"Pipeline / codec floor ({target['source_codec']} source, {codec}), "
                     f"worst case ({target['where']})", "x", target))  # fmt: skip
    operator = results.get("operator", {})
    if operator.get("target"):
        jobs = operator["config"]["jobs"]
        rows.append(
            (f"Operator: {jobs} AugmentationJobs until all have a Job", "s", operator["target"])
        )
        rows.append((f"Operator: reconciles per job ({jobs} jobs, every handler call)", "",
                     operator["target_reconciles_per_job"]))  # fmt: skip
    api = results.get("api", {})
    clients = api.get("config", {}).get("concurrency")
    api_names = {
        "get_by_id_p99_ms": (f"API: GET by id p99 at {clients} concurrent clients", "ms"),
        "list_p99_ms": (f"API: list p99 at {clients} concurrent clients", "ms"),
        "post_rps_vs_apiserver_create_rps": (
            f"API: POST req/s / apiserver create req/s at {clients} concurrent clients", "x"),
    }  # fmt: skip
    for key, target in api.get("targets", {}).items():
        rows.append((*api_names[key], target))
    return [{"name": n, "unit": u, **t} for n, u, t in rows]  # fmt: skip


def margin_text(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return "not measured"
    if t["pass"]:
        return f"{t['margin_pct']:+.0f}% headroom"
    factor = t["value"] / t["target"] if t["op"] == "<=" else t["target"] / t["value"]
    return f"misses by {-t['margin_pct']:.0f}% ({factor:.2f}x)"


# ----------------------------------------------------------------------- markdown


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def with_unit(value: float | None, unit: str) -> str | None:
    if value is None:
        return None
    if not unit:
        return str(value)
    return f"{value}x" if unit == "x" else f"{value} {unit}"


def md_targets(results: dict) -> list[str]:
    rows = [
        [t["name"], with_unit(t["value"], t["unit"]),
         f"{t['op']} {with_unit(t['target'], t['unit'])}",
         "PASS" if t["pass"] else "MISS", margin_text(t)]
        for t in targets(results)
    ]  # fmt: skip
    return ["## Targets", "", *table(["target", "measured", "goal", "verdict", "margin"], rows)]


def md_transforms(r: dict) -> list[str]:
    idle, loaded = r["ratios"]["idle"], r["ratios"]["loaded"]
    ratio_rows, fps_rows = [], []
    for res, cases in r["fps"]["idle"].items():
        for case, fps in cases.items():
            busy = r["fps"]["loaded"][res][case]
            ratio_rows.append([f"{res} {case}",
                               *(q[res][case].get(name) for q in (idle, loaded)
                                 for name in ("ours_vs_albumentations",
                                              "ours_1thread_vs_albumentations_1thread")),
                               idle[res][case].get("ours_vs_naive_pillow")])  # fmt: skip
            fps_rows.append([f"{res} {case}",
                             *(row.get(name) for row in (fps, busy)
                               for name in ("ours_numpy", "albumentations", "ours_numpy_1thread",
                                            "albumentations_1thread")),
                             fps["naive_pillow"]])  # fmt: skip
    cpu_rows = _cpu_rows(r.get("cpu_ms_per_frame_1thread"), r.get("cpu_ratios_1thread"))
    cpu_block = [
        "CPU time per frame at one thread (ms, `time.thread_time` of the same runs: all "
        "of each side's work is on the calling thread, and other processes move it far "
        "less than wall time); ratio = albumentations / ours, higher is better:", "",
        *table(["case", "idle ours", "idle albu", "idle albu/ours", "loaded ours",
                "loaded albu", "loaded albu/ours"], cpu_rows),
        "",
    ] if cpu_rows else []  # fmt: skip
    cfg, gpu, state = r["config"], r["gpu"], r["machine_state"]
    load, average = state["loaded"], state["load_average_1_5_15"]
    return [
        "## Transforms (frames per second; ratios are ours / other, higher is better)", "",
        f"Machine state: **idle** = {state['idle']}; **loaded** = "
        f"{load['competing_processes']} competing CPU-bound processes ({load['what']}), which "
        f"used {load['cores_they_used_mean']} cores on average (at least "
        f"{load['cores_they_used_min']}). Load average (1/5/15 min) {average['start']} when "
        f"this benchmark started, {average['end']} when it ended. Every row ran in both "
        "states, seconds apart; "
        "all cores = our workers on every core, albumentations frame by frame with OpenCV's "
        "default threads; 1 thread = both on one thread (OpenCV's too).", "",
        *table(["case", "idle ours/albu", "idle 1-thread ours/albu", "loaded ours/albu",
                "loaded 1-thread ours/albu", "idle ours/naive"], ratio_rows),
        "",
        *table(["case", "idle ours", "idle albu", "idle ours 1t", "idle albu 1t",
                "loaded ours", "loaded albu", "loaded ours 1t", "loaded albu 1t",
                "idle naive"], fps_rows),
        "",
        *cpu_block,
        f"Batch of {cfg['batch_frames']} frames, best of {cfg['repetitions']} interleaved "
        f"repetitions per state; resolutions {cfg['resolutions']}; parameters {cfg['params']}. "
        f"GPU: {gpu.get('device') if gpu.get('available') else gpu.get('reason')}.",
    ]  # fmt: skip


def _cpu_rows(cpu_ms: dict | None, ratios: dict | None) -> list[list[Any]]:
    """Rows of the one-thread CPU time table (none in results from before it existed)."""
    if not cpu_ms or not ratios:
        return []
    rows = []
    for res, cases in cpu_ms["idle"].items():
        for case in cases:
            cells: list[Any] = [f"{res} {case}"]
            for state in ("idle", "loaded"):
                row = cpu_ms[state][res][case]
                cells += [row.get("ours_numpy_1thread"), row.get("albumentations_1thread"),
                          ratios[state][res].get(case)]  # fmt: skip
            rows.append(cells)
    return rows


def md_pipeline(r: dict) -> list[str]:
    cfg, average = r["config"], r["load_average_1_5_15"]
    ratio_rows, abs_rows, competing = [], [], []
    for label, by_codec in r["sizes"].items():
        for codec, case in by_codec.items():
            for state in ("idle", "loaded"):
                row = case[state]
                q, s, fps = row["ratios"], row["seconds"], row["output_fps"]
                name = f"{label} {row['source_codec']} ({codec}) {state}"
                ratio_rows.append([name, q["pipeline_vs_floor"],
                                   q["pipeline_minus_transforms_vs_floor"],
                                   q.get("decode_per_copy_vs_decode_once"),
                                   q["transforms_share_of_pipeline"]])  # fmt: skip
                abs_rows.append([name, s["pipeline"], s["floor"], s.get("decode_per_copy"),
                                 s["transforms"], s["decode"], fps["pipeline"],
                                 fps["floor"]])  # fmt: skip
                if state == "loaded":
                    competing.append(row["competing_cores"])
    sizes = ", ".join(f"{w}x{h}" for h, w in cfg["sizes"])
    return [
        f"## Pipeline (one episode of {cfg['frames']} frames at {sizes}, {cfg['copies']} "
        "stacked copies of all four transforms)", "",
        f"Machine state: **idle** = {cfg['idle']}; **loaded** = {cfg['loaded']}, which used "
        f"{round(sum(competing) / len(competing), 2)} cores on average (at least "
        f"{min(competing)}). Load average (1/5/15 min) {average['start']} when this "
        f"benchmark started, {average['end']} when it ended, on {usable_cores()} cores.", "",
        *table(["source, state", "pipeline / floor", "(pipeline - transforms) / floor",
                "decode per copy / decode once", "transforms share"], ratio_rows),
        "",
        *table(["source, state", "pipeline s", "floor s", "decode-per-copy s", "transforms s",
                "decode s", "pipeline out fps", "floor out fps"], abs_rows),
        "",
        "floor = decode once + encode the copies of the untransformed frames, with the "
        "pipeline's codecs, thread counts and one thread per copy; decode per copy (idle "
        "only) = one thread per copy, each decoding the source and encoding its copy; "
        "transforms = the pipeline's augmenters alone on the decoded frames (NumPy here).",
        "",
        "Why it misses on CPU: the NumPy transforms run on the same "
        f"{usable_cores()} cores as the codecs, so their CPU time adds to the encode time "
        "instead of overlapping it, and the floor has no transforms at all; the "
        "(pipeline - transforms) / floor column is what is left without them.",
    ]  # fmt: skip


def md_operator(r: dict) -> list[str]:
    lat, rec, a, cpu = r["latency"], r["reconcile"], r["analysis"], r["cpu_cores"]
    rows = [
        ["AugmentationJobs created at once", r["config"]["jobs"]],
        ["all of them have their Job after (s)", r["all_jobs_s"]],
        ["Jobs per second", a["jobs_per_second"]],
        ["create requests took (s)", r["create_requests_s"]],
        ["CR create → Job p50 / p99 / max (ms)", f"{lat.get('p50_ms')} / {lat.get('p99_ms')} / "
                                                  f"{lat.get('max_ms')}"],
        ["reconcile duration p50 / p99 / mean (ms, operator histogram)",
         f"{rec['p50_ms']} / {rec['p99_ms']} / {rec['mean_ms']}"],
        ["reconciles per job (every handler call)", rec["per_job"]],
        ["… per job, by trigger", ", ".join(
            f"{k} {v}" for k, v in rec.get("per_job_by_trigger", {}).items())],
        ["kopf max_workers", a["kopf_max_workers"]],
        ["reconciles/s the workers allow (workers / mean)",
         a["reconciles_per_second_allowed_by_workers"]],
        ["reconciles/s the target needs", a["reconciles_per_second_needed_for_target"]],
        ["worker busy fraction", a["worker_busy_fraction"]],
        ["CPU cores used during the burst", ", ".join(f"{k} {v}" for k, v in cpu.items())],
    ]  # fmt: skip
    return ["## Operator (kopf, local process, real control plane, no pods run)", "",
            machine_state_line(r), "", *table(["figure", "value"], rows)]  # fmt: skip


def machine_state_line(r: dict) -> str:
    """The operator and API benchmarks start no competing load: one state, the machine's."""
    load = r.get("machine_state", {}).get("load_average_1_5_15", {})
    return (f"Machine state: as found, no competing process started (this benchmark has no "
            f"loaded column); load average (1/5/15 min) {load.get('start')} when it started, "
            f"{load.get('end')} when it ended, on {usable_cores()} cores.")


def md_api(r: dict) -> list[str]:
    phases = [
        ("POST /v1/augmentation", "post"),
        ("POST via httpx.AsyncClient", "post_httpx_client"),
        ("GET /v1/augmentation/{id}", "get_by_id"),
        ("GET /v1/augmentation?limit=20", "list"),
        ("GET /healthz", "healthz"),
        ("apiserver create (floor)", "apiserver_create"),
    ]
    rows = []
    for label, key in phases:
        p = r[key]
        rows.append([label, p.get("p50_ms"), p.get("p90_ms"), p.get("p99_ms"), p.get("max_ms"),
                     p.get("requests_per_second"), p.get("ok"), p.get("errors") or None,
                     p.get("client_cpu_ms_per_request")])  # fmt: skip
    q, a, log = r["ratios"], r["analysis"], r["server_log"]
    return [
        f"## API ({r['config']['concurrency']} concurrent closed-loop clients, loopback, "
        "1 uvicorn worker)", "", machine_state_line(r), "",
        *table(["phase", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s", "ok", "errors",
                "client CPU ms/req"], rows),
        "",
        *table(["figure", "value"], [
            ["POST p50 / apiserver create p50", q["post_p50_vs_apiserver_create_p50"]],
            ["POST p99 / apiserver create p99", q["post_p99_vs_apiserver_create_p99"]],
            ["POST req/s / apiserver create req/s", q["post_rps_vs_apiserver_create_rps"]],
            ["POST p99 via httpx / POST p99", q["post_httpx_p99_vs_post_p99"]],
            ["mean-latency floor at the apiserver's create rate (ms)",
             a["mean_ms_floor_at_apiserver_create_rps"]],
            ["mean-latency floor at /healthz rate (ms)", a["mean_ms_floor_at_healthz_rps"]],
            ["req/s a read p99 of 20 ms needs at this concurrency (Little's law)",
             a["rps_needed_for_read_p99_target"]],
            ["mean-latency floor at the GET-by-id rate (ms)", a["mean_ms_floor_at_get_by_id_rps"]],
            ["apiserver connections discarded by the API's pool",
             log["apiserver_connections_discarded"]],
            *([f"CPU cores during {name}", ", ".join(f"{k} {v}" for k, v in
                                                      r[key].get("server_cpu_cores", {}).items())]
              for name, key in (("POST", "post"), ("GET by id", "get_by_id"), ("list", "list"))),
        ]),
    ]  # fmt: skip


def md_machine(results: dict) -> list[str]:
    m = results["machine"]
    in_this_run = [s for s in results["sections"] if s not in results.get("measured_later", {})]
    lines = [
        "## Machine", "",
        f"{m['cpu_model']}, {m['cpus_usable']} usable cores, load average "
        f"{m['load_average_1_5_15']} at start and {m.get('load_average_end')} at the end "
        f"(1/5/15 min; the machine is shared, so figures are noisy: compare ratios), "
        f"{m['date_utc']}, commit {m['commit']}, Python {m['python']}, NumPy {m['numpy']}; "
        f"{'quick' if results['quick'] else 'full'} run of {', '.join(in_this_run)} "
        f"in {results.get('seconds_total')} s.",
    ]  # fmt: skip
    for name, when in results.get("measured_later", {}).items():
        where = (f", {when['cpu_model']}, {when['cpus_usable']} usable cores, load average "
                 f"{when['load_average_1_5_15']} at start" if "cpu_model" in when else "")
        lines += ["", f"{name}: measured later, {when['date_utc']}, commit {when['commit']}"
                      f"{where} (`--merge`)."]  # fmt: skip
    busy = sorted(set(m.get("realtime_processes", [])) | set(m.get("realtime_processes_end", [])))
    if busy:
        lines += ["", f"Other processes at real-time priority during the run (they take whole "
                      f"cores from the benchmark): {', '.join(busy)}."]  # fmt: skip
    return lines


def merged(earlier: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The earlier run with this run's sections in place of its own: its machine and
    totals stay; each section taken from this run is dated in `measured_later`."""
    out = {**earlier, **{name: results[name] for name in results["sections"]}}
    out["sections"] = [s for s in SECTIONS if s in {*earlier["sections"], *results["sections"]}]
    later = {**earlier.get("measured_later", {})}
    m = results["machine"]
    for name in results["sections"]:
        later[name] = {"date_utc": m["date_utc"], "commit": git_commit(),
                       "cpu_model": m["cpu_model"], "cpus_usable": m["cpus_usable"],
                       "load_average_1_5_15": m["load_average_1_5_15"]}  # fmt: skip
    out["measured_later"] = later
    return out


def md_images(r: dict) -> list[str]:
    rows = [[name, image["ref"], image["size_mb"], image["archive_mb"], max(image["layers_mb"]),
             image["build_seconds"]] for name, image in r["images"].items()]
    return ["## Images (`make images`, dev/augment_dev/images.py)", "",
            *table(["image", "reference", "size MB", "OCI archive MB (gzip)",
                    "largest layer MB", "build s"], rows), "",
            f"size = the layers as stored, uncompressed, the Debian {r['base']['release']} "
            f"base included ({', '.join(r['base']['packages'])}); build s = the build that "
            "made the cached image, the base excluded; `augment-runner-cpu` is the runner "
            "without CuPy and the CUDA wheels, which `make test` runs."]


def md_scaling(r: dict) -> list[str]:
    cfg, paper = r["config"], r["paper"]
    rows = [[row["shards"], row["wall_s"], row["speedup_vs_1"], row["finalize_s"] or "—",
             f"{round(100 * row['finalize_share'])}%" if row["finalize_s"] else "—",
             ", ".join(str(s) for s in row["runner_pods_s"])] for row in r["runs"]]
    lines = [
        f"## Scaling ({cfg['episodes']} episodes of {cfg['frames']} frames "
        f"{cfg['width']}x{cfg['height']}, {cfg['copies']} copies, embedded cluster, pods as "
        f"processes on {r['cores']} cores)", "",
        *table(["shards", "wall s", "speed-up vs 1", "finalize s", "finalize share",
                "shard pods s (slowest first)"], rows), "",
        f"wall = `kubectl apply` to Succeeded; every pod shares the machine's {r['cores']} "
        "cores, so N shards cannot run N times faster here: the rows show the cost of "
        "sharding (pod starts, staging commits, the merge), not its gain on N GPU nodes.",
    ]
    if "error" in paper:
        return [*lines, "", f"On paper: not computed ({paper['error']})."]
    d = paper["dataset"]
    return [*lines, "",
            f"On paper, {d['episodes']} episodes x {d['frames_per_episode']} frames x "
            f"{d['cameras']} cameras at 480p, {d['copies']} copies, on {d['nodes']} L4 nodes: "
            f"{paper['per_camera_frame_ms']} ms per camera frame (measured, transforms on the "
            f"GPU) x {paper['camera_frames']} camera frames = {paper['augment_s']} s of "
            f"augmenting per node, + {paper['finalize_s']} s finalize = "
            f"**{paper['total_s']} s** ({paper['one_node_s']} s on one node); Hub transfers "
            "not included (bench/README.md)."]


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Benchmark results", "", "Written by `make bench` (`python -m bench.run`); "
             "see bench/README.md for what each figure means.", ""]  # fmt: skip
    lines += md_targets(results)
    writers = {"transforms": md_transforms, "pipeline": md_pipeline,
               "operator": md_operator, "api": md_api, "images": md_images,
               "scaling": md_scaling}  # fmt: skip
    for name in results["sections"]:
        section = results.get(name, {})
        lines.append("")
        if "error" in section:
            lines += [f"## {name}", "", f"FAILED: {section['error']}"]
        else:
            lines += writers[name](section)
    left_out = [name for name in SECTIONS if name not in results["sections"]]
    if left_out:
        lines += ["", f"This run measured {', '.join(results['sections'])} only "
                      f"(`python -m bench.run --only ...`): {', '.join(left_out)} did not run, "
                      "and their figures are in earlier versions of this file."]  # fmt: skip
    lines += ["", *md_machine(results), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    panels = [("transforms", plot_transforms), ("pipeline", plot_pipeline),
              ("operator", plot_operator), ("api", plot_api)]  # fmt: skip
    for ax, (name, draw) in zip(axes.flat, panels, strict=True):
        section = results.get(name)
        if section is None or "error" in section:
            ax.set_axis_off()
            ax.set_title(f"{name}: {'not run' if section is None else 'failed'}")
            continue
        draw(ax, section)
    m = results["machine"]
    fig.suptitle(f"make bench — {m['cpu_model']}, {m['cpus_usable']} cores, "
                 f"load {m['load_average_1_5_15'][0]}, {m['date_utc']}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_transforms(ax: Any, r: dict) -> None:
    series = {
        f"{state}, {threads}": (state, name)
        for state in ("idle", "loaded")
        for threads, name in (("all cores", "ours_vs_albumentations"),
                              ("1 thread", "ours_1thread_vs_albumentations_1thread"))
    }  # fmt: skip
    labels = [(res, case) for res, cases in r["ratios"]["idle"].items() for case in cases]
    width = 0.2
    for i, (label, (state, name)) in enumerate(series.items()):
        values = [r["ratios"][state][res][case].get(name, 0) for res, case in labels]
        ax.bar([x + (i - 1.5) * width for x in range(len(labels))], values, width, label=label)
    ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
    ax.axhline(1.5, color="k", linestyle=":", linewidth=0.8)
    ax.set_xticks(range(len(labels)), [f"{res}\n{case}" for res, case in labels], fontsize=7)
    ax.set_ylabel("ours / albumentations (dashed 1.0: each, dotted 1.5: stacked)")
    ax.set_title("Transforms: ours / albumentations, idle and under competing load")
    ax.legend(fontsize=8)


def plot_pipeline(ax: Any, r: dict) -> None:
    cases = [(label, codec, case["idle"]) for label, by_codec in r["sizes"].items()
             for codec, case in by_codec.items()]  # fmt: skip
    parts = ["floor", "decode_per_copy", "pipeline", "transforms"]
    width = 0.2
    for i, part in enumerate(parts):
        values = [row["seconds"][part] for _, _, row in cases]
        ax.bar([x + (i - 1.5) * width for x in range(len(cases))], values, width, label=part)
    for x, (_, _, row) in enumerate(cases):
        limit = 1.25 * row["seconds"]["floor"]
        ax.hlines(limit, x - 0.45, x + 0.45, colors="k", linestyles="--")
    ax.set_xticks(range(len(cases)),
                  [f"{label} {row['source_codec']}" for label, _, row in cases])  # fmt: skip
    ax.set_ylabel("seconds, idle (dashed: 1.25 x floor)")
    ax.set_title("Pipeline: one episode, N copies, end to end vs the codec floor")
    ax.legend(fontsize=8)


def plot_operator(ax: Any, r: dict) -> None:
    times = r["progress"]
    ax.step([0, *times], range(len(times) + 1), where="post", label="Jobs created")
    ax.axvline(r["config"]["target_seconds"], color="k", linestyle="--", label="target")
    ax.set_xlabel("seconds since the first AugmentationJob was created")
    ax.set_ylabel("AugmentationJobs with their Job")
    ax.set_title(f"Operator: {r['config']['jobs']} AugmentationJobs at once")
    ax.legend(fontsize=8)


def plot_api(ax: Any, r: dict) -> None:
    keys = ["post", "post_httpx_client", "get_by_id", "list", "healthz", "apiserver_create"]
    labels = ["POST", "POST\n(httpx)", "GET by id", "list", "healthz", "apiserver\ncreate"]
    width = 0.4
    for i, q in enumerate(("p50_ms", "p99_ms")):
        ax.bar([x + (i - 0.5) * width for x in range(len(keys))],
               [r[k].get(q) or 0 for k in keys], width, label=q.removesuffix("_ms"))  # fmt: skip
    ax.axhline(20, color="k", linestyle="--", label="target p99 (reads)")
    ax.set_xticks(range(len(keys)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(f"API at {r['config']['concurrency']} concurrent clients")
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- main


def write(results: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / "results.md").write_text(text)
    plot(results, out / "results.png")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_all(args.only, args.quick)
    earlier = args.out / "results.json"
    if args.merge and earlier.exists():
        results = merged(json.loads(earlier.read_text()), results)
    print(write(results, args.out))
    return 1 if any("error" in results.get(s, {}) for s in args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
