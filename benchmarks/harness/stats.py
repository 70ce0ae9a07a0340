"""Summaries of repeated runs: median with min and max."""
import statistics


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def rotated(items, round_index):
    """The order of round `round_index`: each round starts one later, so no
    target always runs first (cold caches) or last (a warm, busy machine)."""
    k = round_index % len(items) if items else 0
    return items[k:] + items[:k]
