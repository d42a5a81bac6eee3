"""`kopretrain train`: continual pretraining on Ray Train.

Pure core (no Ray, no MLflow): `mixing` (domain sampler), `schedule` (learning rate),
`stages` (what each stage trains), `loop` (the training step), `strategies/` (local, DDP, FSDP2,
DeepSpeed ZeRO), `checkpoint`, `model`. Glue: `worker` (the Ray Train per-worker function) and
`command` (`run_train`, the driver). Import-light: nothing heavy is imported here.
"""
