"""Screenshots of `mlflow ui` for the README: a replay sweep as kopretrain files it (one parent run,
one child per ratio named and tagged by it, held-out bpc as metrics; `kopretrain report`'s PNG on
the parent), served by a real `mlflow server` and shot with headless Chromium.

    apt-get install chromium
    .venv/bin/python tools/mlflow_compare_screenshot.py docs/
    # -> docs/mlflow-compare.png: the compare view of the three replay runs (mix.replay_ratio against a bpc metric)

The numbers are the README demo's table (base, replay 0.0 and 0.2) plus a 0.5 point.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = {"ko": {"bpc": 43.817}, "en": {"bpc": 2.982}}
RATIOS = {"0.0": (4.584, 4.296), "0.2": (4.557, 3.006), "0.5": (4.71, 2.995)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_sweep(url: str, work: Path) -> tuple[str, list[str], str]:
    from kopretrain.config.common import TrackingConfig
    from kopretrain.config.report import ReportConfig
    from kopretrain.report.command import run_report
    from kopretrain.run_dir import write_report
    from kopretrain.tracking import MlflowTracker

    parent = MlflowTracker(url, "kopretrain", "train-sweep-cpt", tags={"kopretrain.swept": "mix.replay_ratio"})
    children = []
    for num, (ratio, (ko, en)) in enumerate(RATIOS.items()):
        child = MlflowTracker(url, "kopretrain", f"replay_ratio={ratio}", parent.run_id,
                              tags={"sweep.mix.replay_ratio": ratio, "kopretrain.sweep_point": str(num)})
        child.log_params({"mix.replay_ratio": ratio, "num_steps": 200})
        child.log_metrics({"ko_bpc": ko, "en_bpc": en, "ko_bpc_delta": ko - BASE["ko"]["bpc"],
                           "en_bpc_delta": en - BASE["en"]["bpc"], "en_bpc_retained": BASE["en"]["bpc"] / en})
        write_report(work / str(num) / "report.json", {"eval": {"domains": {"ko": {"bpc": ko}, "en": {"bpc": en}},
                                                                 "base": BASE}, "mlflow_run_id": child.run_id})
        child.log_artifact(work / str(num) / "report.json")
        child.end()
        children.append(child.run_id)
    parent.end()
    run_report(ReportConfig(sweep=parent.run_id, tracking=TrackingConfig(uri=url)), work / "report")
    experiment_id = parent.client.get_run(parent.run_id).info.experiment_id
    return parent.run_id, children, experiment_id


def shoot(chromium: str, url: str, out: Path) -> None:
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1500,1000", "--virtual-time-budget=20000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)


def main(out_dir: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found (apt-get install chromium)")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kr-ui-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'db.sqlite'}",
                               "--serve-artifacts", "--artifacts-destination", str(work / "artifacts")],
                              stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        parent, children, exp = log_sweep(url, work)
        runs = json.dumps(children)  # the compare view `kopretrain report` links to from report.md
        shoot(chromium, f"{url}/#/compare-runs?runs={runs}&experiments={json.dumps([exp])}&workflowType=machine_learning",
              out / "mlflow-compare.png")
        print(out / "mlflow-compare.png")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs")
