"""kopretrain.ray_session: the worker log filter of local instances (no dashboard, so no state API)."""

from __future__ import annotations

import logging

from kopretrain.ray_session import _CLEANER_LOGGER, quiet_worker_logs


def test_quiet_worker_logs_drops_only_the_state_api_warning_of_the_cleaner(caplog):
    quiet_worker_logs()
    logger = logging.getLogger(_CLEANER_LOGGER)
    try:
        with caplog.at_level(logging.WARNING, logger=_CLEANER_LOGGER):
            logger.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
            logger.warning("Failed to query placement group table: boom")
        assert [r.getMessage() for r in caplog.records] == ["Failed to query placement group table: boom"]
    finally:
        logger.filters.clear()


def test_worker_lines_file_everything_and_echo_stage_lines_warnings_and_raylet_messages(tmp_path, capsys):
    """What Ray hands the driver for other processes: filed in ray.log; on the console only
    kopretrain's stage lines (without Ray's prefix), warnings/errors and the raylet's messages."""
    from kopretrain.ray_session import LOG_FILE, _WorkerLines

    lines = _WorkerLines()
    lines.open(tmp_path / LOG_FILE, verbose=False)
    worker = {"pid": 41, "actor_name": "RayTrainWorker", "is_err": False}
    lines({**worker, "lines": ["[train] step 3/6  loss 7.4563  lr 3.00e-03  8.3k tok/s",
                               "Setting up process group for: env:// [rank=0, world_size=2]"]})
    lines({**worker, "is_err": True, "lines": ["2026-11-29 22:26:05,887\tWARNING worker.py:12 -- disk almost full"]})
    lines({**worker, "lines": ["[2026-11-29 22:26:06,001] [WARNING] [real_accelerator.py:214:get_accelerator] Setting "
                               "accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."]})
    lines({"pid": 40, "actor_name": "TrainController", "is_err": True, "lines": [
        "[2026-11-29 22:26:05,887 E 7790 7854] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and ID: "
        "'f8e3' has constructor arguments in the object store and max_restarts > 0. If the arguments ..."]})
    lines({"pid": "raylet", "is_err": False, "lines": [
        "WARNING: 8 PYTHON worker processes have been started on node: 8ead with address: 192.0.2.2, which is 4x ...",
        "A worker died or was killed while executing a task by an unexpected system error."]})
    out = capsys.readouterr()
    assert out.out.splitlines() == ["[train] step 3/6  loss 7.4563  lr 3.00e-03  8.3k tok/s",
                                    "(raylet) A worker died or was killed while executing a task by an unexpected system error."]
    assert out.err.splitlines() == ["(RayTrainWorker pid=41) 2026-11-29 22:26:05,887\tWARNING worker.py:12 -- disk almost full"]
    lines.open(None, verbose=False)
    filed = (tmp_path / LOG_FILE).read_text(encoding="utf-8")
    assert "(RayTrainWorker pid=41) [train] step 3/6" in filed and "(RayTrainWorker pid=41) Setting up process group" in filed
    assert "(TrainController pid=40) [2026-11-29" in filed and "(raylet) WARNING: 8 PYTHON worker processes" in filed
    assert "Setting accelerator to CPU" in filed and len(filed.splitlines()) == 7


def test_worker_lines_verbose_echoes_all_but_the_noise(capsys):
    from kopretrain.ray_session import _WorkerLines

    lines = _WorkerLines()
    lines.open(None, verbose=True)
    lines({"pid": 41, "actor_name": "RayTrainWorker", "is_err": False, "lines": [
        "Setting up process group for: env:// [rank=0, world_size=2]", "[train] step 1/6  loss 7.6288  lr 1.50e-03"]})
    lines({"pid": 40, "actor_name": "TrainController", "is_err": True, "lines": ["... has constructor arguments in the object store ..."]})
    out = capsys.readouterr()
    assert out.out.splitlines() == ["(RayTrainWorker pid=41) Setting up process group for: env:// [rank=0, world_size=2]",
                                    "[train] step 1/6  loss 7.6288  lr 1.50e-03"]
    assert out.err == ""


def test_route_logs_files_ray_info_and_keeps_warnings_on_the_console(tmp_path):
    """In a fresh interpreter, as the CLI runs it: earlier tests of this session may have left
    Ray's console handlers bound to a stream that pytest captured then, so capture here can't see them."""
    import subprocess
    import sys

    from kopretrain.ray_session import LOG_FILE

    script = (
        "import logging, sys\n"
        "from kopretrain.ray_session import route_logs\n"
        f"route_logs({str(tmp_path / 'logs')!r}, verbose=False)\n"
        "logging.getLogger('ray.data').info('Starting execution of Dataset x. Full logs are in /tmp/ray/session/logs/ray-data')\n"
        "logging.getLogger('ray.data').warning('a Ray Data warning')\n"
        "logging.getLogger('mlflow.store.db.utils').info('Creating initial MLflow database tables...')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert "Full logs are in" not in console and "Creating initial MLflow" not in console
    assert "a Ray Data warning" in console
    filed = (tmp_path / "logs" / LOG_FILE).read_text(encoding="utf-8")
    assert "Full logs are in" in filed and "Creating initial MLflow database tables" in filed and "a Ray Data warning" in filed
