"""Running a Hydra sweep's points: the sweep's MLflow parent/child layout (`points`) and the
Ray Jobs launcher (`ray_jobs`, behind `hydra/launcher=ray_jobs`, whose Hydra plugin class lives
in the top-level `hydra_plugins.kopretrain_ray_jobs` package, where Hydra looks for plugins)."""
