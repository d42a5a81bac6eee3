"""`hydra/launcher=ray_jobs`: submit each point of a multirun as a Ray job (the Jobs API that
`ray job submit` uses) and follow them; see `kopretrain.launch.ray_jobs` for what it does.

    kopretrain train -m experiment=smoke mix.replay_ratio=0,0.2,0.5 \\
        hydra/launcher=ray_jobs hydra.launcher.address=http://head:8265 hydra.launcher.max_concurrent=2
"""

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class RayJobsLauncherConf:
    _target_: str = "hydra_plugins.kopretrain_ray_jobs.ray_jobs_launcher.RayJobsLauncher"
    address: str = ""
    """The cluster's dashboard (Jobs API) address, e.g. http://head:8265; '' = $RAY_ADDRESS."""
    max_concurrent: int = 4
    """Points submitted at once; the next one is submitted when one ends."""
    fit_check: bool = True
    """Refuse a point that can never fit the cluster and submit the next point only when its driver + Train workers fit beside the running points' (false = max_concurrent alone)."""
    entrypoint_num_cpus: float = 0
    """CPUs reserved for each point's driver process (its Train workers reserve their own)."""
    entrypoint_num_gpus: float = 0
    """GPUs reserved for each point's driver process."""
    entrypoint_resources: dict[str, float] = field(default_factory=dict)
    """Custom resources reserved for each point's driver process, e.g. {head: 0.01}."""
    runtime_env: dict[str, Any] = field(default_factory=dict)
    """Ray runtime_env of every point (env_vars, working_dir, pip, ...); KOPRETRAIN_SWEEP_POINT is added."""
    job_dir: str = ""
    """Directory each point's command starts in ('' = the launch directory, a shared filesystem; with runtime_env.working_dir, Ray's copy of it)."""
    python: str = ""
    """Python that runs `-m kopretrain` on the cluster ('' = this interpreter: same venv on every node)."""
    poll_interval_s: float = 2.0
    """Seconds between status and log polls of the running points."""
    stop_grace_s: int = 10
    """On Ctrl-C: seconds a stopped point has between Ray's SIGTERM and SIGKILL (its RAY_JOB_STOP_WAIT_TIME_S); the launcher waits this + 20 s for STOPPED."""


ConfigStore.instance().store(group="hydra/launcher", name="ray_jobs", node=RayJobsLauncherConf, provider="kopretrain")


class RayJobsLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from kopretrain.launch.ray_jobs import launch_points

        assert self.config is not None and self.hydra_context is not None
        return launch_points(self.params, self.hydra_context, self.config, job_overrides, initial_job_idx)
