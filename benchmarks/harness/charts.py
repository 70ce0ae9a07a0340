"""PNG charts of a run: requests/s and instructions/request per echo
workload, grouped bars (one bar per target), one panel per server style."""
import matplotlib

matplotlib.use("Agg")          # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"asyncio": "#9e9e9e", "uvloop": "#1f77b4", "rloop": "#ff7f0e",
          "aioring": "#2ca02c", "C floor": "#444444"}


def _panels(results):
    panels = {}
    for entry in results["echo"]:
        w = entry["workload"]
        panels.setdefault(w["kind"], []).append(entry)
    return panels


def _chart(results, targets, value_of, ylabel, title, path, error_bars, log_scale=False):
    panels = _panels(results)
    if not panels:
        return None
    width = max(8.0, 0.9 * max(len(e) for e in panels.values()) + 3)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.6 * len(panels)), squeeze=False)
    bar = 0.8 / len(targets)
    for ax, (kind, entries) in zip(axes[:, 0], panels.items()):
        for i, t in enumerate(targets):
            xs, ys, lo, hi = [], [], [], []
            for x, entry in enumerate(entries):
                v = value_of(entry["results"].get(t))
                if v is None:
                    continue
                mid, vmin, vmax = v
                xs.append(x + (i - (len(targets) - 1) / 2) * bar)
                ys.append(mid)
                lo.append(mid - vmin)
                hi.append(vmax - mid)
            if xs:
                ax.bar(xs, ys, bar, label=t, color=COLORS.get(t),
                       yerr=[lo, hi] if error_bars else None, capsize=1.5)
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([f"{e['workload']['transport']} {e['workload']['row']}" for e in entries],
                           fontsize=8)
        ax.set_title(f"{title}: {kind}", fontsize=10)
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=len(labels), loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def rps_chart(results, targets, path):
    def value(res):
        s = res.get("rps") if res else None
        return (s["median"] / 1e3, s["min"] / 1e3, s["max"] / 1e3) if s else None
    return _chart(results, targets, value, "thousand requests/s",
                  "Echo requests/s (median, min–max)", path, True)


def ir_chart(results, targets, path):
    def value(res):
        v = res.get("ir_per_req") if res else None
        return (v, v, v) if isinstance(v, (int, float)) else None
    if not any(value(r) for e in results["echo"] for r in e["results"].values()):
        return None
    # log scale: from ~150 (the C floor) to ~300,000 (64 KiB through streams)
    return _chart(results, targets, value, "instructions/request (log)",
                  "Echo instructions per request (callgrind, lower is better)", path, False,
                  log_scale=True)
