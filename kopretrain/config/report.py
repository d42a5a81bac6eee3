"""Schema of `kopretrain report` (conf/report.yaml): a sweep's comparison table and trade-off plot."""

from __future__ import annotations

from dataclasses import dataclass, field

from kopretrain.config.common import TrackingConfig, require


@dataclass
class ReportConfig:
    """`kopretrain report <sweep dir | MLflow parent run id>`: report.md, tradeoff.png, logged on the parent run."""

    sweep: str = ""
    """A sweep directory (holding the sweep's report.json) or the MLflow run id of a sweep's parent run."""
    output_dir: str = ""
    """Where report.md and tradeoff.png go ('' = the sweep directory; for a run id, this run's directory)."""
    korean_domain: str = "ko"
    """The held-out domain whose bpc is the Korean column."""
    english_domain: str = "en"
    """The held-out domain whose bpc is the English column (retention is measured on it)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """The MLflow store a run id is looked up in (a sweep directory's report.json names its own store)."""

    def __post_init__(self):
        require(bool(self.korean_domain.strip()), "korean_domain", "must not be empty")
        require(bool(self.english_domain.strip()), "english_domain", "must not be empty")
