"""`kopretrain plan`: what a continual-pretraining run needs and costs, before any GPU is rented.

Pure (no torch, Ray, Hydra or MLflow): `shapes` (known model shapes, HF config dicts),
`model_size` (parameter counts from an HF config dict), `hardware` (peak TFLOPS and memory per
GPU type), `memory` (bytes per GPU per strategy), `estimate` (flops, time, cost, the projection
from a measured `train` report). `command` is the CLI glue (`run_plan(cfg, run_dir)`).
"""
