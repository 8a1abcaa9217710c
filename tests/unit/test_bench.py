"""Smoke tests of `make bench`: every benchmark in a tiny mode, and the report it writes.

Sizes here are far too small to mean anything about speed (docs/design.md, Testing: speed is
measured by `make bench`, never asserted in tests); the tests check that each benchmark
runs end to end, returns the documented structure, and that its values are sane.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

# bench/ is a folder of the repository (run as `python -m bench.run`), not an installed
# package: make it importable however pytest was started.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench.common
from bench import (
    bench_api,
    bench_operator,
    bench_pipeline,
    bench_scaling,
    bench_transforms,
    run,
)
from bench.common import bench_cluster, latency_summary, verdict

TINY_TRANSFORMS = bench_transforms.CpuConfig(batch=2, reps=1, resolutions={"480p": (24, 32)})
TINY_PIPELINE = bench_pipeline.PipelineConfig(
    frames=6, sizes=((48, 64),), copies=2, codecs=("libx264",), load_processes=1
)
TINY_OPERATOR = bench_operator.OperatorBenchConfig(jobs=3, target_seconds=60, creators=3)
TINY_API = bench_api.ApiBenchConfig(
    concurrency=4, posts=8, gets=4, lists=4, healthz=8, apiserver_creates=8
)


@pytest.fixture(scope="module")
def local_results() -> dict[str, Any]:
    results: dict[str, Any] = {}
    bench_transforms.run(results, quick=True, config=TINY_TRANSFORMS)
    bench_pipeline.run(results, quick=True, config=TINY_PIPELINE)
    return results


@pytest.fixture(scope="module")
def cluster_results() -> Iterator[dict[str, Any]]:
    results: dict[str, Any] = {}
    with bench_cluster("bench-test") as cluster:
        bench_operator.run(results, True, cluster, TINY_OPERATOR, namespace="bench-test")
        bench_api.run(results, True, cluster, TINY_API, namespace="bench-test")
        yield results


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0 and math.isfinite(value)


def assert_latencies(summary: dict[str, Any], count: int) -> None:
    assert summary["count"] == count
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]


# ------------------------------------------------------------------------- helpers


def test_verdict_margins_are_signed_relative_to_the_target():
    assert verdict(1.5, 1.0, True) == {
        "value": 1.5, "target": 1.0, "op": ">=", "pass": True, "margin_pct": 50.0
    }  # fmt: skip
    lower = verdict(150.0, 100.0, False)
    assert not lower["pass"] and lower["margin_pct"] == -50.0 and lower["op"] == "<="
    assert verdict(None, 30.0, False) == {
        "value": None, "target": 30.0, "op": "<=", "pass": False, "margin_pct": None
    }  # fmt: skip
    assert run.margin_text(lower) == "misses by 50% (1.50x)"


def test_latency_summary_is_in_milliseconds():
    summary = latency_summary([0.001 * i for i in range(1, 101)])
    assert summary["count"] == 100 and summary["max_ms"] == 100.0
    assert summary["p50_ms"] == pytest.approx(50.5) and summary["p99_ms"] == pytest.approx(99.01)
    assert latency_summary([]) == {"count": 0}


def test_histogram_quantile_interpolates_within_buckets_like_prometheus():
    text = "\n".join([
        "# TYPE augment_reconcile_seconds histogram",
        'augment_reconcile_seconds_bucket{le="0.1"} 10.0',
        'augment_reconcile_seconds_bucket{le="0.5"} 30.0',
        'augment_reconcile_seconds_bucket{le="+Inf"} 40.0',
        "augment_reconcile_seconds_count 40.0",
        "augment_reconcile_seconds_sum 8.0",
    ])  # fmt: skip
    after = bench_operator.parse_histogram(text, "augment_reconcile_seconds")
    empty = {"buckets": [], "count": 0.0, "sum": 0.0}
    delta = bench_operator.histogram_delta(empty, after)
    assert delta["count"] == 40 and delta["sum"] == 8.0
    assert bench_operator.histogram_quantile(0.5, delta["buckets"]) == pytest.approx(0.3)
    assert bench_operator.histogram_quantile(0.99, delta["buckets"]) == 0.5  # in +Inf: its floor
    summary = bench_operator.reconcile_summary(delta, jobs=20)
    assert summary["per_job"] == 2.0 and summary["mean_ms"] == 200.0


def test_cli_rejects_unknown_benchmarks():
    assert run.parse_args(["--only", "api, operator"]).only == ["api", "operator"]
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "transforms,gpu"])


# ---------------------------------------------------------------------- benchmarks


def test_transforms_bench_measures_every_case_idle_and_loaded(local_results):
    r = local_results["transforms"]
    ours_and_albu = {"ours_numpy", "ours_numpy_1thread", "albumentations", "albumentations_1thread"}
    for state, impls in (("idle", ours_and_albu | {"naive_pillow"}), ("loaded", ours_and_albu)):
        assert set(r["fps"][state]["480p"]) == set(bench_transforms.CASES)
        for row in r["fps"][state]["480p"].values():
            assert set(row) == impls and all(positive(v) for v in row.values())
    load = r["machine_state"]["loaded"]
    assert set(r["machine_state"]["load_average_1_5_15"]) == {"start", "end"}
    assert load["competing_processes"] == bench.common.usable_cores()
    assert 0 <= load["cores_they_used_min"] <= load["cores_they_used_mean"]  # tiny: ~0 s of load
    idle = r["ratios"]["idle"]["480p"]["stacked"]
    row = r["fps"]["idle"]["480p"]["stacked"]
    assert idle["ours_1thread_vs_albumentations_1thread"] == pytest.approx(
        row["ours_numpy_1thread"] / row["albumentations_1thread"], abs=0.01
    )
    cpu = r["cpu_ms_per_frame_1thread"]["loaded"]["480p"]["stacked"]
    assert set(cpu) == {"ours_numpy_1thread", "albumentations_1thread"}
    assert all(positive(v) for v in cpu.values())
    assert r["cpu_ratios_1thread"]["loaded"]["480p"]["stacked"] == pytest.approx(
        cpu["albumentations_1thread"] / cpu["ours_numpy_1thread"], abs=0.01
    )
    assert set(r["ratios"]["loaded"]["480p"]["stacked"]) == {
        "ours_vs_albumentations", "ours_1thread_vs_albumentations_1thread"
    }  # fmt: skip
    stacked, each = r["targets"]["stacked"], r["targets"]["each"]
    assert stacked["target"] == 1.5 and each["target"] == 1.0 and stacked["op"] == ">="
    every_stacked = [v for q in r["ratios"].values() for k, v in q["480p"]["stacked"].items()
                     if "albumentations" in k]  # fmt: skip
    assert stacked["value"] == min(every_stacked) and "stacked" in stacked["where"]
    assert "stacked" not in each["where"]
    assert r["gpu"]["available"] in (True, False)


def test_competing_load_takes_cores_while_it_runs_and_stops():
    with bench.common.competing_load(1) as load:
        (pid,) = load.pids.values()
        time.sleep(0.3)
    assert load.cores["spinner-0"] > 0.1
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped


def test_pipeline_bench_compares_with_the_codec_floor_idle_and_loaded(local_results):
    case = local_results["pipeline"]["sizes"]["48p"]["libx264"]
    for state, steps in (("idle", ("pipeline", "floor", "decode", "decode_per_copy",
                                   "transforms")),
                         ("loaded", ("pipeline", "floor", "decode", "transforms"))):  # fmt: skip
        r = case[state]
        assert r["source_codec"] == "h264"
        s = r["seconds"]
        # Times only: which of two timings is larger depends on the machine's load.
        assert sorted(s) == sorted(steps) and all(positive(s[k]) for k in steps)
        # the seconds are rounded to the ms, the ratio computed before rounding
        assert r["ratios"]["pipeline_vs_floor"] == pytest.approx(
            s["pipeline"] / s["floor"], rel=0.05
        )
        assert 0 < r["ratios"]["transforms_share_of_pipeline"] < 1
        assert r["target"]["target"] == 1.25 and r["target"]["op"] == "<="
    assert case["loaded"]["competing_cores"] > 0  # the competing process did run
    target = local_results["pipeline"]["targets"]["libx264"]
    worst = max(case[state]["ratios"]["pipeline_vs_floor"] for state in ("idle", "loaded"))
    assert target["value"] == worst and target["where"].startswith("48p ")


def test_pipeline_target_is_the_worst_size_and_state() -> None:
    def row(ratio: float) -> dict[str, Any]:
        return {"ratios": {"pipeline_vs_floor": ratio}, "source_codec": "av1"}

    sizes = {"480p": {"libsvtav1": {"idle": row(1.1), "loaded": row(1.2)}},
             "720p": {"libsvtav1": {"idle": row(1.3), "loaded": row(1.2)}}}  # fmt: skip
    target = bench_pipeline.pipeline_targets(sizes)["libsvtav1"]
    assert (target["value"], target["where"], target["pass"]) == (1.3, "720p idle", False)
    assert target["source_codec"] == "av1"


@pytest.mark.e2e
def test_operator_bench_sees_a_job_for_every_augmentation_job(cluster_results):
    r = cluster_results["operator"]
    assert r["complete"] and r["jobs_seen"] == TINY_OPERATOR.jobs
    assert positive(r["all_jobs_s"]) and len(r["progress"]) == TINY_OPERATOR.jobs
    assert r["progress"] == sorted(r["progress"])
    assert r["progress"][-1] == pytest.approx(r["all_jobs_s"], abs=0.01)
    assert_latencies(r["latency"], TINY_OPERATOR.jobs)
    assert r["reconcile"]["count"] >= TINY_OPERATOR.jobs  # at least one per job
    assert positive(r["reconcile"]["mean_ms"])
    assert r["analysis"]["kopf_max_workers"] >= 1
    assert "operator" in r["cpu_cores"] and "kube-apiserver" in r["cpu_cores"]
    assert r["target"]["value"] == r["all_jobs_s"]
    assert r["target_reconciles_per_job"]["value"] == r["reconcile"]["per_job"]
    by_trigger = r["reconcile"]["per_job_by_trigger"]
    assert by_trigger["cr"] > 0 and set(by_trigger) <= {"cr", "child", "resync", "resync_skipped"}


@pytest.mark.e2e
def test_api_bench_answers_every_request(cluster_results):
    r = cluster_results["api"]
    for key, count in [("post", TINY_API.posts), ("post_httpx_client", TINY_API.posts),
                       ("get_by_id", TINY_API.gets), ("list", TINY_API.lists),
                       ("healthz", TINY_API.healthz),
                       ("apiserver_create", TINY_API.apiserver_creates)]:  # fmt: skip
        assert r[key]["ok"] == count and not r[key]["errors"], (key, r[key])
        assert_latencies(r[key], count)
        assert positive(r[key]["requests_per_second"])
    targets = r["targets"]
    assert targets["get_by_id_p99_ms"]["value"] == r["get_by_id"]["p99_ms"]
    assert targets["list_p99_ms"]["value"] == r["list"]["p99_ms"]
    assert targets["post_rps_vs_apiserver_create_rps"]["value"] == \
        r["ratios"]["post_rps_vs_apiserver_create_rps"]
    assert targets["post_rps_vs_apiserver_create_rps"]["op"] == ">="
    assert positive(r["ratios"]["post_p50_vs_apiserver_create_p50"])
    assert positive(r["analysis"]["mean_ms_floor_at_apiserver_create_rps"])
    assert r["server_log"]["apiserver_connections_discarded"] >= 0


# The images section is built and reported by tests/images/test_built_images.py.
SECTIONS_BUT_IMAGES = [s for s in run.SECTIONS if s not in ("images", "scaling")]  # own runs


@pytest.mark.e2e
def test_report_has_targets_tables_and_a_plot(local_results, cluster_results, tmp_path: Path):
    results = {
        "machine": run.machine_info() | {"load_average_end": [0.0, 0.0, 0.0]},
        "quick": True,
        "sections": SECTIONS_BUT_IMAGES,
        **local_results,
        **cluster_results,
        "seconds_total": 1.0,
    }
    text = run.write(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["sections"] == SECTIONS_BUT_IMAGES
    assert (tmp_path / "results.md").read_text() == text
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.index("## Targets") < text.index("## Transforms") < text.index("## Machine")
    assert [t["name"].split(":")[0].split(", worst")[0] for t in run.targets(results)] == [
        "Transforms", "Transforms", "Pipeline / codec floor (h264 source, libx264)", "Operator",
        "Operator", "API", "API", "API",
    ]  # fmt: skip
    assert text.count("PASS") + text.count("MISS") >= 4


def test_merge_keeps_the_other_sections_and_dates_the_new_ones() -> None:
    machine = {"date_utc": "2030-01-02T03:04:05Z", "cpu_model": "CPU", "cpus_usable": 2,
               "load_average_1_5_15": [1.0, 2.0, 3.0]}
    earlier = {"machine": {"date_utc": "2030-01-01T00:00:00Z"}, "sections": ["api", "pipeline"],
               "api": {"a": 1}, "pipeline": {"p": 1}, "seconds_total": 9.0}
    later = {"machine": machine, "sections": ["images", "api"], "api": {"a": 2},
             "images": {"i": 1}}
    out = run.merged(earlier, later)
    assert out["sections"] == ["pipeline", "api", "images"]  # in SECTIONS order
    assert (out["api"], out["pipeline"], out["images"]) == ({"a": 2}, {"p": 1}, {"i": 1})
    assert out["machine"] == earlier["machine"] and out["seconds_total"] == 9.0
    assert set(out["measured_later"]) == {"images", "api"}
    assert out["measured_later"]["images"]["date_utc"] == machine["date_utc"]
    assert out["measured_later"]["api"]["load_average_1_5_15"] == [1.0, 2.0, 3.0]  # its own


def test_the_scaling_estimate_follows_the_measured_per_frame_cost() -> None:
    """The on-paper figure of the scaling benchmark, from a pipeline result and the
    measured finalize time (no cluster here: the runs are given)."""
    seconds = {"pipeline": 16.0, "transforms": 7.0, "decode": 0.9}
    pipeline = {"config": {"frames": 300, "copies": 3},
                "sizes": {"480p": {"libx264": {"idle": {"seconds": seconds}}}}}
    runs = [{"shards": 1, "wall_s": 60.0, "finalize_s": 0.0, "output_episodes": 192},
            {"shards": 4, "wall_s": 50.0, "finalize_s": 9.6, "output_episodes": 192}]
    paper = bench_scaling.PaperDataset()
    est = bench_scaling.estimate(pipeline, runs, paper)
    # (16 - 7) / 300 s per camera frame for 3 copies, as the paper's 3 copies.
    assert est["per_camera_frame_ms"] == 30.0
    assert est["camera_frames"] == 1000 * 300 * 3
    assert est["augment_s"] == round(900_000 * 0.03 / 8)
    assert est["finalize_s"] == round(9.6 / 192 * 4000)  # per output episode
    assert est["total_s"] == est["augment_s"] + est["finalize_s"]
    # Fewer copies: the encode part shrinks, decoding stays.
    two = bench_scaling.estimate(pipeline, runs, bench_scaling.PaperDataset(copies=2))
    assert two["per_camera_frame_ms"] == round((0.003 + 0.027 * 2 / 3) * 1000, 1)
    assert "error" in bench_scaling.estimate(None, runs)
    scaling = {"config": asdict(bench_scaling.QUICK), "cores": 2, "paper": est,
               "runs": [{**r, "finalize_share": r["finalize_s"] / r["wall_s"],
                         "runner_pods_s": [30.0], "speedup_vs_1": 1.0} for r in runs]}
    text = "\n".join(run.md_scaling(scaling))
    assert "| 4 | 50.0 | 1.0 | 9.6 | 19% |" in text and f"**{est['total_s']} s**" in text
