"""Forgetting against a base model: every metric's change, one retention summary, MLflow metric names.

    report.update(compare(report))   # report has "domains", "kobest", "base", "base_kobest"
    tracker.log_metrics(metrics(report))

Changes are model minus base (`delta`): for bpc, loss and perplexity a positive change is worse
(on English: forgetting), for KoBEST accuracy and macro-F1 a positive change is better.

The retention summary of a run (`report["retention"]`):
  bpc_retained.<domain>      base bpc / model bpc: 1.0 = as good as the base on that domain,
                             below 1 = more bits per character than the base (on English:
                             forgetting), above 1 = fewer (what training on Korean is for)
  bpc_change_pct.<domain>    100 * (model - base) / base
  kobest_mean_acc_gained     model's KoBEST mean accuracy minus the base's (points of accuracy, 0-1)
  kobest_mean_macro_f1_gained  the same for macro-F1

Pure Python.
"""

from __future__ import annotations

DOMAIN_METRICS = ("bpc", "loss_per_token", "perplexity")
KOBEST_METRICS = ("acc", "macro_f1")


def compare(report: dict) -> dict:
    """{"delta": ..., "delta_bpc": ..., "retention": ...} of a report that has a base."""
    model, base = report["domains"], report["base"]
    delta = {"domains": {d: {m: model[d][m] - base[d][m] for m in DOMAIN_METRICS} for d in model}}
    retention: dict = {"bpc_retained": {d: base[d]["bpc"] / model[d]["bpc"] for d in model},
                       "bpc_change_pct": {d: 100 * (model[d]["bpc"] - base[d]["bpc"]) / base[d]["bpc"] for d in model}}
    kobest, base_kobest = report.get("kobest") or {}, report.get("base_kobest") or {}
    if kobest and base_kobest:
        delta["kobest"] = {t: {m: kobest[t][m] - base_kobest[t][m] for m in KOBEST_METRICS} for t in kobest}
        retention["kobest_mean_acc_gained"] = delta["kobest"]["mean"]["acc"]
        retention["kobest_mean_macro_f1_gained"] = delta["kobest"]["mean"]["macro_f1"]
    return {"delta": delta, "delta_bpc": {d: v["bpc"] for d, v in delta["domains"].items()}, "retention": retention}


def metrics(report: dict) -> dict[str, float]:
    """The flat MLflow metrics of a report: ko_bpc, ko_loss_per_token, ko_perplexity, kobest_copa_acc,
    kobest_mean_acc, ...; with a base also ko_bpc_delta, kobest_copa_acc_delta, en_bpc_retained,
    kobest_mean_acc_gained, ..."""
    out: dict[str, float] = {}
    for d, v in report["domains"].items():
        out.update({f"{d}_{m}": v[m] for m in DOMAIN_METRICS})
    for task, v in (report.get("kobest") or {}).items():
        out.update({f"kobest_{task.lower()}_{m}": v[m] for m in KOBEST_METRICS})
    delta = report.get("delta")
    if delta:
        for d, v in delta["domains"].items():
            out.update({f"{d}_{m}_delta": v[m] for m in DOMAIN_METRICS})
        for task, v in delta.get("kobest", {}).items():
            out.update({f"kobest_{task.lower()}_{m}_delta": v[m] for m in KOBEST_METRICS})
        r = report["retention"]
        out.update({f"{d}_bpc_retained": v for d, v in r["bpc_retained"].items()})
        out.update({k: r[k] for k in ("kobest_mean_acc_gained", "kobest_mean_macro_f1_gained") if k in r})
    return out


def retention_line(retention: dict) -> str:
    """One console line: 'retention: ko bpc retained 118.0%, en bpc retained 97.2%, KoBEST mean acc +0.031'."""
    parts = [f"{d} bpc retained {100 * v:.1f}%" for d, v in retention["bpc_retained"].items()]
    if "kobest_mean_acc_gained" in retention:
        parts.append(f"KoBEST mean acc {retention['kobest_mean_acc_gained']:+.3f}")
    return "retention: " + ", ".join(parts)
