"""Hugging Face hub ids on the driver: the local cache first, one line when the hub cannot be reached.

    config = load_config("meta-llama/Llama-2-7b-hf")   # or a local model directory

`transformers.AutoConfig.from_pretrained` of a hub id on a machine without network retries five
times with backoff (about 30 s) and logs two warning lines per try before it fails. Here a
directory loads as before; a hub id is looked up in the local Hugging Face cache first
(`local_files_only=True`: no network); only an id missing from the cache goes to the hub, after a
DNS lookup of the endpoint (`HF_ENDPOINT`, default huggingface.co) that fails at once with the
reason when the host cannot be resolved, and with the hub client's retry warnings kept out of
the console. A cached id whose hub cannot be resolved turns this process offline
(`HF_HUB_OFFLINE=1`, inherited by a local Ray instance's workers), so that the tokenizer and
weight reads that follow use the cache instead of retrying every file five times. Errors:
OSError / ValueError with one first line, for the caller's UserError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse


def load_config(name_or_path: str):
    """The `transformers` config of a local model directory or a hub id (see the module docstring)."""
    from huggingface_hub import constants
    from transformers import AutoConfig

    if Path(name_or_path).is_dir():
        return AutoConfig.from_pretrained(name_or_path)
    try:
        cached = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        cached = None  # not cached: from the hub
    if constants.HF_HUB_OFFLINE:
        if cached is not None:
            return cached
        raise OSError(f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set")
    unreachable = hub_unreachable(constants.ENDPOINT)
    if unreachable and cached is None:
        raise OSError(f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {unreachable}; download it "
                      "where there is network (huggingface-cli download) or give a local directory")
    if unreachable:  # cached: the whole run reads the cache, not five retries per file
        go_offline(f"{unreachable}: {name_or_path} is read from the Hugging Face cache (HF_HUB_OFFLINE=1 for this run)")
        return cached
    if cached is not None:
        return cached
    with quiet("huggingface_hub"):
        return AutoConfig.from_pretrained(name_or_path)


def go_offline(note: str) -> None:
    """HF_HUB_OFFLINE for this process and those it starts (a local Ray instance's workers); says `note` once."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        print(f"kopretrain: {note}", file=sys.stderr, flush=True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub and transformers (is_offline_mode)


def hub_unreachable(endpoint: str) -> str | None:
    """Why `endpoint`'s host cannot be resolved ("huggingface.co cannot be resolved: ..."), or None."""
    host = urlparse(endpoint).hostname or endpoint
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"{host} cannot be resolved ({exc.strerror or exc})"
    return None


@contextlib.contextmanager
def quiet(logger_name: str):
    """Only errors from `logger_name` (and its children) while inside."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
