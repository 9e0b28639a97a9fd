"""One self-contained HTML page per pipeline run: metrics, plots, fairness, the verdict.

Plots are matplotlib PNGs embedded as data URIs, so the page can be attached to a CI run
or stored in the artifact store as one file. Personal-data columns never appear in it.
`publish` writes a run's page locally and keeps a copy in the stack's store.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.layout import report_key
from ml import tasks
from ml.evaluate import fairness_gap

if TYPE_CHECKING:
    from ml.clouds.base import Stack
    from ml.evaluate import Evaluation, Verdict
    from ml.lifecycle import PipelineResult

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1d2733}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0}
td,th{padding:.3rem .8rem;border-bottom:1px solid #dde3ea;
  text-align:left}
th{background:#f3f6f9} .num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0a7a3d;font-weight:600} .fail{color:#b3261e;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:1rem} .plots img{width:300px;border:1px solid #dde3ea}
.muted{color:#5d6b7a}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(evaluation: Evaluation) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    if evaluation.confusion:
        images.append(("Confusion matrix", _confusion(plt, evaluation)))
    if evaluation.roc["fpr"]:
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        ax.plot(evaluation.roc["fpr"], evaluation.roc["tpr"], lw=2)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"ROC (AUC {evaluation.metrics['roc_auc']:.3f})")
        images.append(("ROC curve", _png(fig)))
    if evaluation.points:
        actual, predicted = evaluation.points["actual"], evaluation.points["predicted"]
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        ax.scatter(actual, predicted, s=8, alpha=0.6, color="#4c78a8")
        low, high = min(actual + predicted), max(actual + predicted)
        ax.plot([low, high], [low, high], ls="--", color="grey", lw=1)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("Predicted vs actual")
        images.append(("Predicted vs actual", _png(fig)))
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        ax.hist([p - a for a, p in zip(actual, predicted, strict=True)], bins=30, color="#4c78a8")
        ax.axvline(0, ls="--", color="grey", lw=1)
        ax.set_xlabel("residual (predicted - actual)")
        ax.set_ylabel("rows")
        ax.set_title("Residuals")
        images.append(("Residuals", _png(fig)))
    if evaluation.fairness:
        fairness = evaluation.fairness
        measure = fairness.get("measure", "tpr")
        groups = fairness["groups"]
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        # an undefined rate (no positives) is a missing bar, not a bar at 0
        values = [float("nan") if g[measure] is None else g[measure] for g in groups.values()]
        ax.bar(list(groups), values, color="#4c78a8")
        if measure != "mae":
            ax.set_ylim(0, 1)
        ax.set_ylabel(tasks.MEASURE_TITLES[measure])
        ax.set_title(f"{tasks.MEASURE_TITLES[measure]} by {fairness['attribute']}")
        images.append(("Fairness", _png(fig)))
    return images


MAX_LABELLED_CLASSES = 20  # beyond this a confusion matrix's cells are too small to read


def _confusion(plt: Any, evaluation: Evaluation) -> str:
    """Counts by true class (rows) and predicted class (columns), named by their labels."""
    matrix = evaluation.confusion
    k = len(matrix)
    names = [str(label) for label in evaluation.labels or range(k)]
    size = 3.6 if k <= 3 else min(8.0, 1.2 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(matrix, cmap="Blues")
    if k <= MAX_LABELLED_CLASSES:
        darkest = max(max(row) for row in matrix) or 1
        for i in range(k):
            for j in range(k):
                dark = matrix[i][j] > darkest / 2  # white on the dark cells, so every count reads
                colour = "white" if dark else "black"
                ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color=colour,
                        fontsize=13 if k <= 3 else 9)  # fmt: skip
        ax.set_xticks(range(k), [f"pred {n}" for n in names], rotation=45 if k > 3 else 0)
        ax.set_yticks(range(k), [f"true {n}" for n in names])
    ax.set_title("Confusion matrix")
    return _png(fig)


def _rows(pairs: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in pairs
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render(
    *,
    model: str,
    run_id: str,
    stack: str,
    candidate: Evaluation,
    verdict: Verdict,
    champion: Evaluation | None = None,
    champion_version: int | None = None,
    version: int | None = None,
    card: dict[str, Any] | None = None,
) -> str:
    """The report page as a string."""
    card = card or {}
    status = (
        '<span class="pass">PASSED</span>' if verdict.passed else '<span class="fail">FAILED</span>'
    )
    metric_rows = []
    for name, value in candidate.metrics.items():
        row = (name, f"{value:.4f}")
        if champion is not None:
            theirs = champion.metrics.get(name, float("nan"))
            row += (f"{theirs:.4f}", f"{value - theirs:+.4f}")
        metric_rows.append(row)
    header = ("metric", "candidate") + (
        (f"champion v{champion_version}", "delta") if champion is not None else ()
    )
    checks = _rows(
        [(c.name, "pass" if c.passed else "FAIL", c.detail) for c in verdict.checks],
        ("check", "result", "detail"),
    )
    fairness = _fairness(candidate.fairness) if candidate.fairness else ""
    per_class = ""
    if candidate.per_class:
        per_class = "<h2>Per class</h2>" + _rows(
            [(label, f"{v['recall']:.4f}", v["rows"]) for label, v in candidate.per_class.items()],
            ("class", "recall", "rows"),
        )
    latency = ""
    if candidate.latency_ms:
        latency = "<h2>Single-row latency (ONNX)</h2>" + _rows(
            [(k, f"{v:.3f} ms") for k, v in candidate.latency_ms.items()], ("percentile", "value")
        )
    importances = ""
    if card.get("feature_importances"):
        scorer = tasks.IMPORTANCE_SCORER[candidate.task].removeprefix("neg_")
        importances = f"<h2>Permutation importance (drop in {scorer})</h2>" + _rows(
            [
                (i["feature"], f"{i['mean']:.4f} ± {i['std']:.4f}")
                for i in card["feature_importances"]
            ],
            ("feature", "importance"),
        )
    lineage = _rows(
        [
            ("data", card.get("data", {}).get("uri", "")),
            ("data hash", card.get("data", {}).get("hash", "")),
            ("code version", card.get("code_version", "")),
            (
                "rows (train / test)",
                f"{card.get('data', {}).get('train_rows', '')} / {candidate.rows}",
            ),
        ],
        ("lineage", ""),
    )
    plots = "".join(f'<img alt="{html.escape(t)}" src="{src}">' for t, src in _plots(candidate))
    title = f"{model} · run {run_id}"
    created = html.escape(card.get("created_at", ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(model)} {f"v{version}" if version else ""} — gate {status}</h1>
<p class="muted">run {html.escape(run_id)} · stack {html.escape(stack)} · {created}</p>
<h2>Gate verdict</h2>{checks}
<h2>Metrics (holdout)</h2>{_rows(metric_rows, header)}
<div class="plots">{plots}</div>
{per_class}{fairness}{latency}{importances}
<h2>Lineage</h2>{lineage}
</body></html>
"""


def _fairness(f: dict[str, Any]) -> str:
    """Every group with its measure and whether it entered the gap, and why not."""
    measure = f.get("measure", "tpr")
    binary = measure == "tpr"
    name, gap = fairness_gap(f)
    header = (
        f["attribute"],
        tasks.MEASURE_TITLES[measure],
        *(("selection rate",) if binary else ()),
    )
    rows = [
        (
            g,
            "undefined" if v[measure] is None else f"{v[measure]:.4f}",
            *((f"{v['selection_rate']:.4f}",) if binary else ()),
            v["count"],
            v.get("status", "judged"),
        )
        for g, v in f["groups"].items()
    ]
    left_out = ""
    if f.get("left_out"):
        why = "fewer than {} rows, or no positive rows".format(f.get("min_group_size"))
        listed = html.escape("; ".join(f"{g}: {w}" for g, w in f["left_out"].items()))
        left_out = f"<p>Left out of the gap ({why}): {listed}</p>"
    return (
        "<h2>Fairness</h2>"
        + _rows(rows, (*header, "rows", "in the gap"))
        + left_out
        + f"<p>{html.escape(_sentence(tasks.TITLES[name]))}: <b>{gap:.4f}</b></p>"
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def write(path: Path, page: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def publish(stack: Stack, result: PipelineResult, out_dir: Path) -> Path:
    """Render a pipeline run's report, write it under `out_dir/<model>/<run>.html` and keep a
    copy in the stack's store (`contract.layout.report_key`); return the local path.

    The CLI's `pipeline` verb and the demo both publish through here, so a report looks the
    same and lands in the same place whoever ran the pipeline.
    """
    model, run_id = result.spec.name, result.outcome.run_id
    page = render(
        model=model,
        run_id=run_id,
        stack=f"{stack.cloud}:{stack.name}",
        candidate=result.report.candidate,
        verdict=result.report.verdict,
        champion=result.report.champion,
        champion_version=result.report.champion_version,
        version=result.version.version,
        card=result.outcome.card,
    )
    path = write(Path(out_dir) / model / f"{run_id}.html", page)
    stack.store.put_bytes(report_key(model, run_id), page.encode("utf-8"))
    return path
