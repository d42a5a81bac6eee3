"""Data preparation: pure stages (read, validate, normalize, filters, pii, dedup, tokenize,
pack) and the Ray Data glue that runs them over a corpus (`pipeline.py`, `command.py`)."""
