"""What `mlflow ui` shows for a sweep, read through the REST endpoints its pages call, from a real
`mlflow server`: a 3-point replay sweep (parent run, three children tagged and named by their
replay ratio, each with its params, bpc metrics and report.json) logged over HTTP, then
`kopretrain report <parent run id>` against the server. Checked: the experiment opens as a model
training experiment, the parent lists its children (the UI nests runs by `mlflow.parentRunId`),
the children carry the swept param, tags and metrics the chart and compare views plot, and the
report's PNG and markdown are artifacts of the parent that the UI's artifact view downloads.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request

import pytest

from kopretrain.config.common import TrackingConfig
from kopretrain.config.report import ReportConfig
from kopretrain.report.command import run_report
from kopretrain.run_dir import write_report
from kopretrain.tracking import MlflowTracker
from tests.tracking.test_mlflow_server import mlflow_server  # noqa: F401 - the module's server fixture

RATIOS = {"0.0": (4.6, 4.3), "0.2": (4.56, 3.0), "0.5": (4.7, 2.99)}  # ratio -> (ko bpc, en bpc)
BASE = {"ko": {"bpc": 43.8}, "en": {"bpc": 2.98}}


def api(url: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


@pytest.fixture(scope="module")
def sweep_on_server(mlflow_server, tmp_path_factory):  # noqa: F811
    url, _ = mlflow_server
    tmp = tmp_path_factory.mktemp("ui-sweep")
    parent = MlflowTracker(url, "ui-check", "train-sweep-cpt", tags={"kopretrain.swept": "mix.replay_ratio"})
    for num, (ratio, (ko, en)) in enumerate(RATIOS.items()):
        child = MlflowTracker(url, "ui-check", f"replay_ratio={ratio}", parent.run_id,
                              tags={"sweep.mix.replay_ratio": ratio, "kopretrain.sweep_point": str(num)})
        child.log_params({"mix.replay_ratio": ratio})
        child.log_metrics({"ko_bpc": ko, "en_bpc": en, "en_bpc_delta": en - BASE["en"]["bpc"]})
        report = {"eval": {"domains": {"ko": {"bpc": ko}, "en": {"bpc": en}}, "base": BASE}, "mlflow_run_id": child.run_id}
        write_report(tmp / str(num) / "report.json", report)
        child.log_artifact(tmp / str(num) / "report.json")
        child.end()
    parent.end()
    out = run_report(ReportConfig(sweep=parent.run_id, tracking=TrackingConfig(uri=url)), tmp / "report")
    return url, parent.run_id, out


def test_the_experiment_opens_on_its_runs(sweep_on_server):
    url, _, _ = sweep_on_server
    experiment = api(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-check")["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_parent_lists_its_children_with_the_swept_values_and_metrics(sweep_on_server):
    url, parent_id, _ = sweep_on_server
    experiment_id = api(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-check")["experiment"]["experiment_id"]
    found = api(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id],
                                                      "filter": f"tags.mlflow.parentRunId = '{parent_id}'"})["runs"]
    assert len(found) == 3
    by_ratio = {}
    for run in found:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert run["info"]["run_name"] == f"replay_ratio={tags['sweep.mix.replay_ratio']}"
        assert params["mix.replay_ratio"] == tags["sweep.mix.replay_ratio"]  # the chart view's x axis
        by_ratio[params["mix.replay_ratio"]] = (metrics["ko_bpc"], metrics["en_bpc"])
    assert by_ratio == {r: pytest.approx(v) for r, v in RATIOS.items()}


def test_the_report_png_and_table_are_artifacts_of_the_parent(sweep_on_server):
    from PIL import Image

    url, parent_id, out = sweep_on_server
    listed = api(url, f"/api/2.0/mlflow/artifacts/list?run_id={parent_id}")
    assert {"tradeoff.png", "report.md"} <= {f["path"] for f in listed["files"]}
    # the UI's artifact view fetches files through /get-artifact
    query = urllib.parse.urlencode({"path": "tradeoff.png", "run_uuid": parent_id})
    png = api(url, f"/get-artifact?{query}")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] > 300
    with open(out["tradeoff_png"], "rb") as f:
        assert f.read() == png
    query = urllib.parse.urlencode({"path": "report.md", "run_uuid": parent_id})
    markdown = api(url, f"/get-artifact?{query}").decode()
    assert "| replay_ratio | Korean bpc |" in markdown
    # a link to the compare view of the three children, in the UI's model-training layout
    link = markdown.split("[The runs in MLflow's compare view](", 1)[1].split(")", 1)[0]
    assert link.startswith(f"{url}/#/compare-runs?") and link.endswith("&workflowType=machine_learning")
    runs = json.loads(urllib.parse.unquote(link.split("runs=", 1)[1].split("&", 1)[0]))
    assert len(runs) == 3 and parent_id not in runs
