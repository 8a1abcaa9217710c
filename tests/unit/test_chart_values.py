"""The chart's defaults are the components' own: its GPU profiles are the operator's
(augment_operator.check_values), the settings it gives the API are the API's defaults."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from augment_api.settings import ENV_VARS, Settings
from augment_dev import chart
from augment_operator import check_values
from augment_operator.config import OperatorConfig, load_config
from augment_spec.model import AugmentationSpec
from augment_spec.policy import DENIED, HubPolicy, load_policy

VALUES = chart.CHART / "values.yaml"


def test_the_chart_profiles_are_the_operators_defaults() -> None:
    assert check_values.check(VALUES) == [], "run `make generate`"


def test_the_chart_as_installed_configures_the_operator_with_its_defaults(
        tmp_path: Path) -> None:
    (config_map,) = [d for d in chart.of_kind(chart.template({}), "ConfigMap")
                     if "config.yaml" in d.get("data", {})]
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"])
    assert load_config(config) == OperatorConfig()


def test_the_chart_runs_the_api_with_its_default_settings() -> None:
    (deployment,) = [d for d in chart.of_kind(chart.template({}), "Deployment")
                     if d["metadata"]["name"] == "augment-api"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var["value"] for var in container["env"]}
    assert {"AUGMENT_RATE_LIMIT_PER_S", "AUGMENT_PROJECT_JOB_QUOTA"} <= set(env)
    assert set(env) <= set(ENV_VARS.values())
    assert Settings.from_env(env) == Settings()


@pytest.fixture
def stale(tmp_path: Path) -> Path:
    """values.yaml with a hand edit inside the block and a comment outside it."""
    path = tmp_path / "values.yaml"
    shutil.copy(VALUES, path)
    text = path.read_text().replace("    nodeSelector: {}\n", "    nodeSelector: {a: b}\n", 1)
    path.write_text("# a comment of the operator's admin\n" + text)
    return path


def test_a_hand_edit_of_the_block_is_reported(stale: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert check_values.check(stale)
    assert check_values.main(["--values", str(stale)]) == 1
    assert "make generate" in capsys.readouterr().err


def test_write_regenerates_the_block_and_keeps_the_rest(stale: Path) -> None:
    before = stale.read_text()
    assert check_values.main(["--write", "--values", str(stale)]) == 0
    assert check_values.check(stale) == []
    assert stale.read_text() == "# a comment of the operator's admin\n" + VALUES.read_text()
    assert before.count("\n") == stale.read_text().count("\n")


def test_a_file_without_the_markers_is_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("profiles: {}\n")
    assert check_values.main(["--values", str(path)]) == 1
    assert "BEGIN profiles" in capsys.readouterr().err


def api_pod(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = [d for d in chart.of_kind(chart.template(values), "Deployment")
                     if d["metadata"]["name"] == "augment-api"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_the_api_gets_no_hub_token_unless_one_is_named() -> None:
    """The runners' (write-capable) token never reaches the API: without a Secret of
    its own, the API reads the previews of public outputs only."""
    pod = api_pod({})
    (container,) = pod["containers"]
    assert not [v for v in pod["volumes"] if v["name"] == "hub-token"]
    assert not [m for m in container["volumeMounts"] if m["name"] == "hub-token"]
    assert not [a for a in container["args"] if a.startswith("--hub-token-file")]


def test_the_api_reads_previews_with_its_own_mounted_hub_token() -> None:
    secret, key = "preview-reader", "hf"
    pod = api_pod({"api": {"hubToken": {"secretName": secret, "secretKey": key}}})
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "hub-token"]
    assert volume["secret"] == {"secretName": secret, "optional": True,
                                "items": [{"key": key, "path": "token"}]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "hub-token"]
    token_file = Path(mount["mountPath"]) / "token"
    assert f"--hub-token-file={token_file}" in container["args"]


def test_the_api_gets_the_extra_environment() -> None:
    pod = api_pod({"api": {"env": {"HF_ENDPOINT": "https://hub.internal"}}})
    (container,) = pod["containers"]
    assert {"name": "HF_ENDPOINT", "value": "https://hub.internal"} in container["env"]


# ---------- the Hub policy ----------
POLICY_PROJECT = "0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11"


def rendered_policy(values: dict[str, Any], folder: Path) -> HubPolicy:
    """The policy file the chart mounts into both components, as they load it."""
    (config_map,) = [d for d in chart.of_kind(chart.template(values), "ConfigMap")
                     if "policy.yaml" in d.get("data", {})]
    path = folder / "policy.yaml"
    path.write_text(config_map["data"]["policy.yaml"])
    return load_policy(path)


def test_the_chart_as_shipped_refuses_every_job_until_projects_are_listed(
        tmp_path: Path) -> None:
    spec = AugmentationSpec.model_validate({"project_id": POLICY_PROJECT,
                                            "dataset_id": "robotics-lab/pick"})
    assert rendered_policy({}, tmp_path).denial(spec, "augment") == \
        f"{DENIED} project {POLICY_PROJECT} has no entry in the Hub policy"
    listed = {"hubPolicy": {"projects": [{"id": POLICY_PROJECT,
                                          "hubNamespaces": ["robotics-lab"]}]}}
    assert rendered_policy(listed, tmp_path).denial(spec, "augment") is None


def test_the_operator_and_the_api_both_read_the_charts_policy() -> None:
    for values, config_map in (({}, "augment-hub-policy"),
                               ({"hubPolicy": {"existingConfigMap": "mine"}}, "mine")):
        for deployment in chart.of_kind(chart.template(values), "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert "--policy=/etc/augment-policy/policy.yaml" in \
                chart.container_argv(deployment, pod["containers"][0]["name"])
            assert {"name": "hub-policy", "configMap": {"name": config_map}} in pod["volumes"]
    unchecked = chart.template({"hubPolicy": {"enabled": False}})
    assert not [d for d in chart.of_kind(unchecked, "ConfigMap")
                if "policy.yaml" in d.get("data", {})]
    for deployment in chart.of_kind(unchecked, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert not any(a.startswith("--policy") for a in
                       chart.container_argv(deployment, pod["containers"][0]["name"]))
