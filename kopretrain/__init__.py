"""kopretrain: continual pretraining of open LLMs on Korean.

Commands (see `kopretrain --help` and README.md):
  prepare    Ray Data: read, validate, normalize, filter, scrub PII, dedup, tokenize, pack
  tokenizer  train a Korean SentencePiece model, merge it into a base tokenizer, measure it
  train      Ray Train (FSDP2 / DeepSpeed ZeRO / DDP) continual pretraining with English replay
  eval       bits per character per domain, forgetting against the base model
  demo       the whole loop on the shipped sample with a tiny model, on a local Ray instance
"""

__version__ = "0.1.0"
