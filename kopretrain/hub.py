"""Hugging Face hub ids on the driver: the local cache first, one line when the hub cannot be reached.

    config = load_config("meta-llama/Llama-2-7b-hf")   # or a local model directory

`transformers.AutoConfig.from_pretrained` of a hub id on a machine without network retries five
times with backoff (about 30 s) and logs two warning lines per try before it fails. Here a
directory loads as before; a hub id is looked up in the local Hugging Face cache first
(`local_files_only=True`: no network); only an id missing from the cache goes to the hub, after a
DNS lookup of the endpoint (`HF_ENDPOINT`, default huggingface.co) that fails at once with the
reason when the host cannot be resolved, and with the hub client's retry warnings kept out of
the console. Errors: OSError / ValueError with one first line, for the caller's UserError.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path
from urllib.parse import urlparse


def load_config(name_or_path: str):
    """The `transformers` config of a local model directory or a hub id (see the module docstring)."""
    from transformers import AutoConfig

    if Path(name_or_path).is_dir():
        return AutoConfig.from_pretrained(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        pass  # not cached: from the hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise OSError(f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set")
    unreachable = hub_unreachable(constants.ENDPOINT)
    if unreachable:
        raise OSError(f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {unreachable}; download it "
                      "where there is network (huggingface-cli download) or give a local directory")
    with quiet("huggingface_hub"):
        return AutoConfig.from_pretrained(name_or_path)


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
