"""tradeoff.png (matplotlib, Agg backend: no display needed).

Left: English retained (y) against Korean gained (x), one labelled point per run, with the base
at (0, 1) when the runs were compared with a base; without a base, English bpc against Korean bpc.
Right (when the runs' report.json have `losses[i].loss_by_domain`): the training loss per domain,
one colour per run, one line style per domain.
"""

from __future__ import annotations

from pathlib import Path

from kopretrain.report.rows import Run


def draw(path: Path, rows: list[dict], runs: list[Run], curves: dict[str, dict[str, list]]) -> Path:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font-cache INFO lines on the console
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with_curves = any(curves.values())
    fig, axes = plt.subplots(1, 2 if with_curves else 1, figsize=(12 if with_curves else 6.5, 5), squeeze=False)
    ax = axes[0][0]
    relative = any(r["en_retained"] is not None and r["ko_gained"] is not None for r in rows)
    xkey, ykey = ("ko_gained", "en_retained") if relative else ("ko_bpc", "en_bpc")
    points = [(r[xkey], r[ykey], r["name"]) for r in rows if r[xkey] is not None and r[ykey] is not None]
    for x, y, label in points:
        ax.scatter([x], [y], s=40, zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if relative:
        ax.scatter([0.0], [1.0], marker="*", s=120, color="black", zorder=3)
        ax.annotate("base", (0.0, 1.0), textcoords="offset points", xytext=(6, -12), fontsize=9)
        ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
        ax.axvline(0.0, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("Korean gained (base bpc - run bpc; right is better)")
        ax.set_ylabel("English retained (base bpc / run bpc; up is better)")
    else:
        ax.set_xlabel("Korean bpc (lower is better)")
        ax.set_ylabel("English bpc (lower is better)")
    ax.set_title("Korean gained vs English retained" if relative else "Korean vs English bits per character")
    ax.grid(True, alpha=0.3)
    if with_curves:
        ax2 = axes[0][1]
        styles = ["-", "--", ":", "-."]
        domains = sorted({d for c in curves.values() for d in c})
        for i, run in enumerate(runs):
            for j, domain in enumerate(domains):
                pts = curves.get(run.name, {}).get(domain) or []
                if pts:
                    ax2.plot([s for s, _ in pts], [v for _, v in pts], styles[j % len(styles)], color=f"C{i % 10}",
                             label=f"{run.name} {domain}")
        ax2.set_xlabel("step")
        ax2.set_ylabel("training loss (nats per token)")
        ax2.set_title("Training loss per domain")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
