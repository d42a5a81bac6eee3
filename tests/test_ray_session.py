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
