"""Where the project's own files are: `conf/` and the shipped sample `data/`.

Relative paths in configs are taken from the launch directory first; a relative path that
does not exist there but does under the project root (e.g. the default
`data/heldout/ko.txt` when launched from elsewhere) resolves there.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
DATA_DIR = PROJECT_ROOT / "data"


def resolve_path(path: str | Path) -> Path:
    """`path` as given if it exists (or is absolute), else under the project root if it exists there."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    candidate = PROJECT_ROOT / p
    return candidate if candidate.exists() else p
