"""report.md: the sweep's table (pure).

One row per run (its swept values), a `base` row first when the runs were compared with a base:
Korean bpc and its change, KoBEST mean accuracy and its change (when evaluated), English bpc and
its change, English retained and Korean gained (kopretrain/report/rows.py defines them).
"""

from __future__ import annotations

from pathlib import Path

from kopretrain.report.rows import Sweep, bases_differ

# (row key, header, format); changes get a sign
COLUMNS = [
    ("ko_bpc", "Korean bpc", "{:.4f}"), ("ko_change", "Δ Korean bpc", "{:+.4f}"),
    ("kobest_mean", "KoBEST mean acc", "{:.4f}"), ("kobest_change", "Δ KoBEST", "{:+.4f}"),
    ("en_bpc", "English bpc", "{:.4f}"), ("en_change", "Δ English bpc", "{:+.4f}"),
    ("en_retained", "English retained", "{:.4f}"), ("ko_gained", "Korean gained (bpc)", "{:+.4f}"),
    ("final_loss", "final train loss", "{:.4f}"),
]


def _cell(value, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The columns some row has a number for."""
    return [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]


def table(sweep: Sweep, rows: list[dict], base: dict | None) -> str:
    keys = sweep.swept or []
    short = [k.rsplit(".", 1)[-1] for k in keys]
    if len(set(short)) < len(short):
        short = list(keys)
    cols = columns(rows)
    header = (short or ["run"]) + [h for _, h, _ in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    if base is not None:
        cells = ["base"] + [""] * (max(len(keys), 1) - 1)
        cells += [_cell(base.get(k), f) for k, _, f in cols]  # only the bpc and KoBEST columns
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        cells = [r["values"].get(k, "") for k in keys] if keys else [r["name"]]
        cells += [_cell(r.get(k), f) for k, _, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ui_hint(uri: str) -> str:
    """How to open a local store in `mlflow ui` ('' for a server): MLflow's default store is `mlflow.db`
    in the directory `mlflow ui` runs in (unless an ./mlruns store is there); any other needs its URI."""
    if not uri or uri.startswith(("http://", "https://")):
        return ""
    path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if path is not None and path.is_absolute() and path.name == "mlflow.db" and not (path.parent / "mlruns").exists():
        return f"run `mlflow ui` in {path.parent}"
    return f"run `mlflow ui --backend-store-uri {uri}`"


def document(sweep: Sweep, rows: list[dict], base: dict | None, plot_name: str, link: str = "", store: str = "") -> str:
    """report.md; `store` is the tracking URI of the runs `link` opens (a local one gets its `mlflow ui` command)."""
    what = ", ".join(sweep.swept) or "(no swept keys recorded)"
    parts = [f"# Sweep report: {sweep.source}", "",
             f"Swept: {what}. {len(rows)} runs" + (f"; MLflow parent run {sweep.parent_run_id}" if sweep.parent_run_id else "") + ".",
             *(["The runs were compared with different bases (no base row): each change is against the run's own base."]
               if bases_differ(rows) else []),
             *([f"Points without results (not in the table): {'; '.join(sweep.extra['failed'])}."]
               if sweep.extra.get("failed") else []),
             "", table(sweep, rows, base), "",
             "Bits per character on held-out text (lower is better); changes are run minus base. "
             "English retained = base English bpc / run English bpc (1.0 = nothing forgotten); "
             "Korean gained = base Korean bpc - run Korean bpc.", "", f"![trade-off]({plot_name})", ""]
    if link:
        hint = ui_hint(store)
        parts += [f"[The runs in MLflow's compare view]({link})" + (f" (a local store: {hint})." if hint else "."), ""]
    return "\n".join(parts)
