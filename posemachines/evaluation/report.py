"""Comparison reports: tables and figures of a ``compare.Comparison``; no metric logic here.

``write_report`` writes ``report.html`` (self-contained, figures embedded), ``report.md``
(figures as PNG files beside it) and ``results.json`` (every number, the command line and the
package versions).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from posemachines.evaluation.comparison import Comparison

SUMMARY_KEYS = ("pck@0.2", "pck@0.1", "pckh@0.5", "pcp", "auc")


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # non-interactive: reports render anywhere, identically
    import matplotlib.pyplot as plt

    return plt


# -- figures ------------------------------------------------------------------------------------


def _percent(v):
    return np.nan if v is None else 100 * v


def make_figures(comparison: Comparison) -> dict[str, bytes]:
    """The report's figures (PNG bytes by name), drawn from the comparison's numbers."""
    rows, data = comparison.rows, comparison.dataset
    plt = _plt()
    figs = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        res = r.result
        ax.plot(res["thresholds"], [_percent(v) for v in res["pck_curve"]], label=r.label)
    ax.set(
        xlabel="normalised distance (fraction of torso)",
        ylabel="PCK (%)",
        ylim=(0, 100),
        title=f"PCK vs threshold, {data.name}:{data.split}",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    figs["pck_curve"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        vals = [_percent(s["pck@0.2"]) for s in r.result["per_stage"]]
        ax.plot(range(1, len(vals) + 1), vals, marker="o", label=r.label)
    ax.set(xlabel="stage", ylabel="PCK@0.2 (%)", ylim=(0, 100), title="accuracy versus stage")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    figs["pck_by_stage"] = _figure_png(fig)

    joints = list(data.skeleton.joints)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows) + 1, 4.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        table = 100 * r.pck_by_joint_and_stage
        im = ax.imshow(table.T, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        t = len(table)
        ax.set(title=r.label, xlabel="stage", xticks=range(t), xticklabels=range(1, t + 1))
        ax.set_yticks(range(len(joints)), joints if ax is axes[0][0] else [""] * len(joints))
    fig.colorbar(im, ax=axes[0].tolist(), label="PCK@0.2 (%)")
    figs["per_joint_by_stage"] = _figure_png(fig)

    if any("gradients" in r.figures for r in rows):
        figs["gradients_by_stage"] = gradient_figure(rows)
    if any("receptive_field_px" in r.figures for r in rows):
        figs["receptive_field"] = receptive_field_figure(rows, data.skeleton)
    if comparison.examples:
        figs.update(qualitative_figures(comparison))
    return figs


def gradient_figure(rows) -> bytes:
    """Per stage (rows) and moment of training (columns), the distribution of gradient
    magnitudes of every run that recorded them, one line per run."""
    from posemachines.backends.cnn.gradients import GRADIENT_EDGES

    plt = _plt()
    runs = [r for r in rows if "gradients" in r.figures]
    stages = list(runs[0].figures["gradients"][0]["gradients"])
    for r in runs[1:]:
        stages += [s for s in r.figures["gradients"][0]["gradients"] if s not in stages]
    points = max(len(r.figures["gradients"]) for r in runs)
    centres = np.sqrt(np.array(GRADIENT_EDGES[:-1]) * np.array(GRADIENT_EDGES[1:]))
    fig, axes = plt.subplots(
        len(stages), points, figsize=(3.2 * points, 1.6 * len(stages) + 0.6), squeeze=False
    )
    for col in range(points):
        for row, stage in enumerate(stages):
            ax = axes[row][col]
            for r in runs:
                records = r.figures["gradients"]
                record = records[min(col, len(records) - 1)]
                summary = record["gradients"].get(stage)
                if summary is None:
                    continue
                supervision = r.figures.get("supervision", "all")
                label = f"{r.label} ({supervision}): median {summary['q50']:.1e}"
                ax.step(centres, summary["histogram"], where="mid", label=label)
                if row == 0:
                    ax.set_title(f"step {record['step']}", fontsize=8)
            ax.set_xscale("log")
            ax.tick_params(labelsize=6)
            ax.set_ylabel(stage, fontsize=7)
            ax.legend(fontsize=5, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("|gradient|", fontsize=7)
    fig.suptitle("gradient magnitudes of each stage's parameters (share per half decade)")
    fig.tight_layout()
    return _figure_png(fig)


def receptive_field_figure(rows, skeleton) -> bytes:
    """PCK@0.2 of the joints near and far down the kinematic chain against each stage's
    receptive field, for every CNN entry."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {name: ls for name, ls in zip(skeleton.kinematic_groups(), ("-", "--"))}
    cnn_rows = [r for r in rows if "receptive_field_px" in r.figures]
    for colour, r in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 9, cnn_rows):
        fields = r.figures["receptive_field_px"]
        for name, values in r.figures["pck_by_group_and_stage"].items():
            ax.plot(
                fields[: len(values)],
                [100 * v for v in values],
                styles.get(name, ":"),
                color=colour,
                marker="o",
                label=f"{r.label}: {name}",
            )
    ax.set(
        xlabel="receptive field of the stage (input pixels, analytic)",
        ylabel="PCK@0.2 (%)",
        ylim=(0, 100),
        title="accuracy against receptive field, joints near and far down the chain",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _figure_png(fig)


def qualitative_figures(comparison: Comparison) -> dict[str, bytes]:
    from posemachines.evaluation.visualize import belief_overlay, draw_skeleton

    rows, data, picks = comparison.rows, comparison.dataset, comparison.examples
    plt = _plt()
    figs = {}
    fig, axes = plt.subplots(
        len(rows), len(picks), figsize=(2.4 * len(picks), 2.6 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c, i in enumerate(picks):
            axes[r][c].imshow(draw_skeleton(data[i].image, row.predictions[-1, i], data.skeleton))
            axes[r][c].set_axis_off()
            axes[r][c].set_title(f"{row.label}: {data.names[i]}", fontsize=7)
    figs["skeletons"] = _figure_png(fig)

    if comparison.beliefs:
        n_cols = max(len(b) for _, b in comparison.beliefs.values())
        fig, axes = plt.subplots(
            len(comparison.beliefs),
            n_cols,
            figsize=(2.4 * n_cols, 2.6 * len(comparison.beliefs)),
            squeeze=False,
        )
        for r, (label, (crop, beliefs)) in enumerate(comparison.beliefs.items()):
            for c in range(n_cols):
                ax = axes[r][c]
                ax.set_axis_off()
                if c < len(beliefs):
                    ax.imshow(belief_overlay(crop, beliefs[c]))
                    ax.set_title(f"{label} stage {c + 1}", fontsize=7)
        figs["beliefs_by_stage"] = _figure_png(fig)

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        per_image = row.pck_by_image
        order = np.argsort(np.nan_to_num(per_image, nan=2.0), kind="stable")
        worst = [i for i in order if comparison.readable[i]][:3]
        for c in range(3):
            axes[r][c].set_axis_off()
        for c, i in enumerate(worst):
            axes[r][c].imshow(draw_skeleton(data[i].image, row.predictions[-1, i], data.skeleton))
            axes[r][c].set_title(
                f"{row.label}: {data.names[i]} PCK {100 * per_image[i]:.1f}%", fontsize=7
            )
    figs["worst_cases"] = _figure_png(fig)
    return figs


# -- rendering ------------------------------------------------------------------------------------

FIGURE_TITLES = {
    "pck_curve": "PCK versus threshold",
    "pck_by_stage": "Accuracy versus stage",
    "per_joint_by_stage": "Per-joint accuracy by stage",
    "skeletons": "The same images, each model's final-stage skeleton",
    "beliefs_by_stage": "Belief maps of one image, stage by stage",
    "worst_cases": "Worst cases of each model",
    "gradients_by_stage": "Gradient magnitudes per stage during training",
    "receptive_field": "Accuracy against receptive field",
}


def _fmt(v, pct=True):
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:g}"


def summary_table(results: dict) -> tuple[list[str], list[list[str]]]:
    head = (
        ["entry", "kind"]
        + [k.upper() for k in SUMMARY_KEYS]
        + ["ms/image", "size MB", "train s", "trained on"]
    )
    body = []
    for e in results["entries"]:
        m = e["result"]["metrics"]
        t = e.get("timing", {})
        body.append(
            [e["label"], e["kind"]]
            + [_fmt(m[k]) for k in SUMMARY_KEYS]
            + [
                f"{t['ms_per_image']:.1f}" if t else "-",
                "-" if e["megabytes"] is None else f"{e['megabytes']:.2f}",
                _fmt(e.get("train_seconds"), pct=False),
                str(e.get("train_data") or "-"),
            ]
        )
    return head, body


DETECTED = (
    ("AP", "oks_ap"),
    ("AP50", "oks_ap50"),
    ("AP75", "oks_ap75"),
    ("AP(M)", "oks_ap_medium"),
    ("AP(L)", "oks_ap_large"),
    ("AR", "oks_ar"),
)


def detected_table(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Every person on detected boxes (COCO's protocol), one row per model; None without."""
    rows = [e for e in results["entries"] if "detected" in e]
    if not rows:
        return None
    head = ["entry", "protocol"] + [name for name, _ in DETECTED] + ["poses"]
    body = [
        [e["label"], e["detected"]["protocol"]]
        + [_fmt(e["detected"]["metrics"][k]) for _, k in DETECTED]
        + [str(e["detected"]["poses"])]
        for e in rows
    ]
    return head, body


DETECTED_TITLE = "Every person, on detected boxes (COCO's protocol, OKS AP by pycocotools)"


def joint_table(results: dict) -> tuple[list[str], list[list[str]]]:
    entries = results["entries"]
    head = ["joint"] + [f"{e['label']} PCK@0.2" for e in entries]
    joints = list(entries[0]["result"]["per_joint"])
    body = [[j] + [_fmt(e["result"]["per_joint"][j]["pck@0.2"]) for e in entries] for j in joints]
    return head, body


def stage_table(results: dict) -> tuple[list[str], list[list[str]]]:
    entries = results["entries"]
    t = max(len(e["result"]["per_stage"]) for e in entries)
    head = ["entry"] + [f"stage {i + 1}" for i in range(t)]
    body = [
        [e["label"]]
        + [_fmt(s["pck@0.2"]) for s in e["result"]["per_stage"]]
        + [""] * (t - len(e["result"]["per_stage"]))
        for e in entries
    ]
    return head, body


def _md_table(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _intro(results: dict) -> str:
    tta = results.get("test_time_augmentation") or {"flip": False, "scales": [1.0]}
    if tta["flip"] or tta["scales"] != [1.0]:
        views = (
            f"Models are scored on beliefs averaged over test-time views (mirrored: "
            f"{'yes' if tta['flip'] else 'no'}; scales {', '.join(f'{s:g}' for s in tta['scales'])}"
            "); prediction files as given. "
        )
    else:
        views = "No test-time augmentation. "
    return (
        f"{results['dataset']}:{results['split']}, {results['n']} samples, person boxes by "
        f"the '{results['protocol']}' protocol in the summary, stage and joint tables, "
        f"skeleton {results['skeleton']}; timing: "
        f"median ms per image (image decoding, crop, all stages and views, decoding), batch 1, "
        f"on {results['device']}. {views}Metrics in percent; PCK uses the torso normaliser."
    )


def render_markdown(results: dict, figures: dict) -> str:
    parts = ["# Pose machine comparison", "", _intro(results), ""]
    if results["notes"]:
        parts += ["## Differences that affect fairness", ""]
        parts += [f"- {n}" for n in results["notes"]] + [""]
    parts += ["## Summary", "", _md_table(*summary_table(results)), ""]
    if detected_table(results):
        parts += [f"## {DETECTED_TITLE}", "", _md_table(*detected_table(results)), ""]
    parts += ["## PCK@0.2 by stage", "", _md_table(*stage_table(results)), ""]
    parts += ["## Per joint (final stage)", "", _md_table(*joint_table(results)), ""]
    for name in figures:
        parts += [f"## {FIGURE_TITLES.get(name, name)}", "", f"![{name}]({name}.png)", ""]
    parts += ["## Command", "", f"`{results['command']}`", ""]
    return "\n".join(parts)


def _html_table(head, body, cls="") -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body
    )
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{rows}</tbody></table>'


def render_html(results: dict, figures: dict) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "img{max-width:100%;display:block;margin:0.5em 0}.note{color:#a33}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Pose machine comparison"
        f"</title><style>{style}</style></head><body>",
        "<h1>Pose machine comparison</h1>",
        f"<p>{html.escape(_intro(results))}</p>",
    ]
    if results["notes"]:
        parts.append("<h2>Differences that affect fairness</h2><ul>")
        parts += [f"<li class='note'>{html.escape(n)}</li>" for n in results["notes"]]
        parts.append("</ul>")
    parts += ["<h2>Summary</h2>", _html_table(*summary_table(results), "summary")]
    if detected_table(results):
        parts += [f"<h2>{html.escape(DETECTED_TITLE)}</h2>"]
        parts += [_html_table(*detected_table(results), "detected")]
    parts += ["<h2>PCK@0.2 by stage</h2>", _html_table(*stage_table(results), "stages")]
    parts += ["<h2>Per joint (final stage)</h2>", _html_table(*joint_table(results), "joints")]
    for name, png in figures.items():
        data = base64.b64encode(png).decode()
        parts.append(
            f"<h2>{html.escape(FIGURE_TITLES.get(name, name))}</h2>"
            f"<img alt='{name}' src='data:image/png;base64,{data}'>"
        )
    parts.append(f"<h2>Command</h2><pre>{html.escape(results['command'])}</pre>")
    # Marks each figure with its decoded size, so a browser test can check that all rendered.
    parts.append(
        "<script>window.addEventListener('load',()=>{for(const i of document.images)"
        "{i.dataset.rendered=i.naturalWidth+'x'+i.naturalHeight}});</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    comparison: Comparison,
    out=None,
    command: str = "",
    *,
    overwrite: bool = False,
    runs_root="runs",
) -> Path:
    """Render ``comparison`` into ``out`` (default: a new ``runs/compare-N``); returns it."""
    from posemachines.files.owned import atomic_write_many, json_text
    from posemachines.files.runs import output_folder

    results = comparison.results(command)
    figures = make_figures(comparison)
    contents = {f"{name}.png": png for name, png in figures.items()}
    contents["report.md"] = render_markdown(results, figures).encode()
    contents["report.html"] = render_html(results, figures).encode()
    contents["results.json"] = json_text(results).encode()
    with output_folder(out, "compare", overwrite=overwrite, runs_root=runs_root) as out_dir:
        atomic_write_many(out_dir, contents)  # the report appears whole or not at all
    return out_dir
