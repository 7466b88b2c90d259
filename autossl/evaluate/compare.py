"""Several models, one protocol, one split: a table (pandas, Markdown) and a grouped bar chart."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .encoders import model_name
from .protocols import evaluate

SETTINGS_COLUMNS = ("protocol", "split", "n_train", "n_test", "top_k", "average")


def compare(models: Sequence[Any], dataset: Any, *, metrics: Any = ("accuracy", "precision", "recall"),
            protocol: str = "knn", names: Sequence[str] | None = None, **kwargs: Any) -> pd.DataFrame:
    """One row per model: its scores and the settings they were measured under. Every model sees
    the same seeded train/test split."""
    models = list(models)
    if not models:
        raise ValueError("no models to compare; give at least one model, checkpoint or run folder")
    if names is not None and len(names) != len(models):
        raise ValueError(f"{len(names)} names for {len(models)} models; give one name per model (or none)")
    rows = []
    for i, model in enumerate(models):
        result = evaluate(model, dataset, protocol, metric=metrics, **kwargs)
        settings = result.pop("settings")
        name = names[i] if names is not None else model_name(model, settings)
        rows.append({"model": name, **result, **{k: settings[k] for k in SETTINGS_COLUMNS if k in settings}})
    df = pd.DataFrame(rows)
    df["model"] = _unique(df["model"].tolist())
    return df


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 and names.count(n) == 1 else f"{n}#{seen[n]}")
    return out


def score_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != "model" and c not in SETTINGS_COLUMNS]


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table (no extra dependency: pandas' to_markdown needs tabulate)."""
    cols = list(df.columns)

    def cell(v: Any) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |",
             "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in cols) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot_comparison(df: pd.DataFrame, out: str | Path, title: str | None = None) -> Path:
    """Grouped bars: one group per metric, one bar per model."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = score_columns(df)
    fig = Figure(figsize=(max(5, 1.6 * len(metrics) * max(1, len(df)) ** 0.5), 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(df))
    x = np.arange(len(metrics))
    for i in range(len(df)):
        values = [float(df[m].iloc[i]) for m in metrics]
        bars = ax.bar(x + (i - (len(df) - 1) / 2) * width, values, width, label=str(df["model"].iloc[i]))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(fontsize=8, frameon=False)
    protocol = df["protocol"].iloc[0] if "protocol" in df else ""
    ax.set_title(title or f"{protocol} evaluation".strip())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    return out
