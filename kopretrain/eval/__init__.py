"""Evaluation: bits per character per domain, and forgetting against a base model."""
