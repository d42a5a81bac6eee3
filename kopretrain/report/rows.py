"""One table row per run of a sweep, from the run's report.json (pure: no MLflow, no matplotlib).

A run's numbers come from its report.json: an eval report (`domains.<d>.bpc`, `base.<d>.bpc`,
`kobest.mean.acc`) or a training report carrying its evaluation under `eval` (what `train`'s
`eval.at_end` writes, against its base, and what the demo adds), plus `losses[i].loss_by_domain`
for the curves.

Retention, per run against the base it started from:
- `en_retained` = base English bpc / run English bpc: the share of the base's English modelling kept
  (1.0 = nothing forgotten, 0.9 = English costs 11% more bits per character than in the base);
- `ko_gained`   = base Korean bpc - run Korean bpc: bits per character saved on Korean (> 0 = better).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Run:
    name: str
    """The run's label: its swept values (`replay_ratio=0.2`) or its directory's name."""
    values: dict[str, str]
    report: dict
    run_dir: str = ""
    mlflow_run_id: str = ""


@dataclass
class Sweep:
    source: str
    swept: list[str]
    runs: list[Run]
    parent_run_id: str = ""
    tracking_uri: str = ""
    sweep_dir: str = ""
    extra: dict = field(default_factory=dict)


def eval_part(report: dict) -> dict:
    ev = report.get("eval")
    return ev if isinstance(ev, dict) and "domains" in ev else report


def _bpc(part, domain: str):
    v = (part or {}).get(domain) if isinstance(part, dict) else None
    return float(v["bpc"]) if isinstance(v, dict) and isinstance(v.get("bpc"), (int, float)) else None


def kobest_mean(kobest) -> float | None:
    """The mean KoBEST accuracy of a `kobest` result (`{"mean": {"acc": ..}}` or `{"mean": ..}`)."""
    mean = kobest.get("mean") if isinstance(kobest, dict) else None
    if isinstance(mean, dict):
        mean = mean.get("acc")
    return float(mean) if isinstance(mean, (int, float)) else None


def _sub(a, b):
    return a - b if a is not None and b is not None else None


def row(run: Run, korean: str = "ko", english: str = "en") -> dict:
    """The numbers of one run (None where its report does not have them)."""
    part = eval_part(run.report)
    base = part.get("base") if isinstance(part.get("base"), dict) else {}
    out = {"name": run.name, "values": dict(run.values), "mlflow_run_id": run.mlflow_run_id, "run_dir": run.run_dir,
           "ko_bpc": _bpc(part.get("domains"), korean), "en_bpc": _bpc(part.get("domains"), english),
           "base_ko_bpc": _bpc(base, korean), "base_en_bpc": _bpc(base, english),
           "kobest_mean": kobest_mean(part.get("kobest")),
           "base_kobest_mean": kobest_mean(part.get("base_kobest") or base.get("kobest"))}
    out["ko_change"] = _sub(out["ko_bpc"], out["base_ko_bpc"])
    out["en_change"] = _sub(out["en_bpc"], out["base_en_bpc"])
    out["kobest_change"] = _sub(out["kobest_mean"], out["base_kobest_mean"])
    out["en_retained"] = out["base_en_bpc"] / out["en_bpc"] if out["base_en_bpc"] and out["en_bpc"] else None
    retained = ((part.get("retention") or {}).get("bpc_retained") or {}).get(english)  # eval's own, same definition
    if isinstance(retained, (int, float)):
        out["en_retained"] = float(retained)
    out["ko_gained"] = _sub(out["base_ko_bpc"], out["ko_bpc"])
    losses = run.report.get("losses")
    last = losses[-1] if isinstance(losses, list) and losses and isinstance(losses[-1], dict) else {}
    out["final_loss"] = float(last["loss"]) if isinstance(last.get("loss"), (int, float)) else None
    return out


def loss_curves(run: Run) -> dict[str, list[tuple[int, float]]]:
    """{domain: [(step, loss), ...]} from the run's `losses[i].loss_by_domain` (empty when absent)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for i, entry in enumerate(run.report.get("losses") or []):
        by_domain = entry.get("loss_by_domain") if isinstance(entry, dict) else None
        for domain, loss in (by_domain or {}).items():
            if isinstance(loss, (int, float)):
                curves.setdefault(domain, []).append((int(entry.get("step", i + 1)), float(loss)))
    return curves


def base_row(rows: list[dict]) -> dict | None:
    """The base's numbers, shared by the runs of the sweep; None without a base, and None when the runs'
    bases differ (a swept base_model_dir, held-out set or KoBEST setting): each row's changes are then
    against its own base, and one base row would contradict them (`bases_differ`)."""
    bases = [(r["base_ko_bpc"], r["base_en_bpc"], r["base_kobest_mean"]) for r in rows if has_base(r)]
    if not bases or bases_differ(rows):
        return None
    return {"ko_bpc": bases[0][0], "en_bpc": bases[0][1], "kobest_mean": bases[0][2]}


def has_base(r: dict) -> bool:
    return r["base_ko_bpc"] is not None or r["base_en_bpc"] is not None or r["base_kobest_mean"] is not None


def bases_differ(rows: list[dict]) -> bool:
    bases = {tuple(None if v is None else round(v, 9) for v in (r["base_ko_bpc"], r["base_en_bpc"], r["base_kobest_mean"]))
             for r in rows if has_base(r)}
    return len(bases) > 1
