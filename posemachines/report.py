"""Comparison reports: tables and figures from evaluation results (no metric logic here).

``run_compare`` scores every entry with ``compare.score_entry`` on the same samples and writes
``report.html`` (self-contained, figures embedded), ``report.md`` (figures as PNG files beside
it) and ``results.json`` (every number, the command line and the package versions).
"""

from __future__ import annotations

import base64
import html
import io
import sys
from pathlib import Path

import numpy as np

from .compare import Entry, load_entry, score_entry, time_model
from .errors import PoseMachinesError

SUMMARY_KEYS = ("pck@0.2", "pck@0.1", "pckh@0.5", "pcp", "auc")
BACKENDS_FOR_DEFAULT = ("mean", "forest", "cnn", "hybrid")


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


def default_entries(root: str | Path = "runs") -> list[Path]:
    """The latest finished run of each backend under ``root``."""
    from .runs import latest_run

    found = [latest_run(b, root) for b in BACKENDS_FOR_DEFAULT]
    found = [p for p in found if p is not None]
    if not found:
        raise PoseMachinesError(
            f"no trained runs under {root}/ to compare; train one with `pm train` or name "
            "model directories / prediction files"
        )
    return found


def fairness_notes(entries: list[Entry], dataset) -> list[str]:
    """Differences that make the comparison unfair, stated rather than hidden."""
    notes = []
    models = [e for e in entries if e.model is not None]
    sizes = {e.model.input_size for e in models}
    if len(sizes) > 1:
        notes.append(
            "input sizes differ: " + ", ".join(f"{e.label} {e.model.input_size} px" for e in models)
        )
    trained_on = {e.label: e.manifest.get("training", {}).get("dataset", "?") for e in models}
    if len(set(trained_on.values())) > 1:
        notes.append(
            "training data differ: " + "; ".join(f"{k}: {v}" for k, v in trained_on.items())
        )
    for label, data in trained_on.items():
        if f"{dataset.name}:{dataset.split}" in data:
            notes.append(f"{label} was trained on the split it is evaluated on")
    if any(e.model is None for e in entries):
        notes.append(
            "prediction files were made outside this toolkit: their crops, person "
            "boxes and decoding are their authors', not the protocol used here"
        )
    if dataset.protocol == "gt":
        notes.append(
            "person boxes come from the ground-truth joints ('gt' protocol): "
            "flattering for every entry"
        )
    return notes


def check_comparable(entries: list[Entry], dataset) -> None:
    for e in entries:
        if e.model is not None and e.model.skeleton.name != dataset.skeleton.name:
            raise PoseMachinesError(
                f"cannot compare {e.label}: it predicts skeleton {e.model.skeleton.name}, the "
                f"comparison uses {dataset.skeleton.name}; models of different skeletons are "
                "not comparable"
            )


def _dir_megabytes(path: Path) -> float:
    files = (
        [path]
        if path.is_file()
        else [p for p in path.rglob("*") if p.is_file() and "checkpoint" not in p.parts]
    )
    return sum(p.stat().st_size for p in files) / 2**20


def run_compare(
    entries,
    dataset=None,
    split="test",
    data_root=None,
    synthetic_size=None,
    protocol=None,
    out=None,
    device="cpu",
    timing_images=20,
    runs_root="runs",
    tta=None,
    on_bad_image="skip",
    overwrite=False,
) -> Path:
    """Evaluate ``entries`` side by side and write the report folder; returns its path.

    ``out`` must be new, empty or a previous report unless ``overwrite``; nothing is left
    behind when the comparison fails.
    """
    from .data import load_dataset
    from .devices import resolve_device
    from .io import atomic_write_bytes, atomic_write_json, package_versions
    from .runs import check_output_folder, output_folder
    from .tta import NO_TTA

    tta = tta or NO_TTA
    device = resolve_device(device)
    if out is not None:
        check_output_folder(out, overwrite, REPORT_FILES)
    paths = [Path(p) for p in entries] or default_entries(runs_root)
    loaded = []
    for p in paths:
        label = p.name if p.name not in {e.label for e in loaded} else f"{p.parent.name}/{p.name}"
        loaded.append(load_entry(p, device, label))
    if dataset is None:
        names = {e.manifest.get("training", {}).get("dataset_name") for e in loaded if e.model}
        names.discard(None)
        names.discard("packed")
        if len(names) > 1:
            raise PoseMachinesError(
                f"entries were trained on different datasets {sorted(names)}: pass --dataset"
            )
        dataset = names.pop() if names else "synthetic"
    options = {"size": synthetic_size} if dataset == "synthetic" else {}
    data = load_dataset(dataset, split, data_root, protocol=protocol, **options)
    check_comparable(loaded, data)

    rows, skipped = [], set()
    for e in loaded:
        result, preds = score_entry(e, data, on_bad_image=on_bad_image, tta=tta)
        skipped |= set(result.skipped_images)
        row = {
            "label": e.label,
            "kind": e.kind,
            "path": str(e.path),
            "result": result.to_dict(),
            "predictions": preds,
        }
        if e.model is not None:
            row["timing"] = time_model(
                e.model, data, timing_images, device=device, tta=tta, on_bad_image=on_bad_image
            )
            row["input_size"] = e.model.input_size
            row["stages"] = e.model.num_stages
            training = e.manifest.get("training", {})
            row["train_seconds"] = training.get("seconds")
            row["train_data"] = training.get("dataset") or training.get("data")
        row["megabytes"] = round(_dir_megabytes(e.path), 2)
        rows.append(row)

    readable = np.array([name not in skipped for name in data.names])
    figures = make_figures(rows, loaded, data, readable)
    notes = fairness_notes(loaded, data)
    if skipped:
        notes.append(
            f"{len(skipped)} unreadable image(s) were skipped and count as missing predictions "
            f"for the models: {', '.join(sorted(skipped)[:5])}"
        )
    results = {
        "dataset": data.name,
        "split": data.split,
        "n": len(data),
        "protocol": data.protocol,
        "skeleton": data.skeleton.name,
        "command": " ".join(["pm"] + sys.argv[1:]),
        "versions": package_versions(),
        "notes": notes,
        "device": device,
        "test_time_augmentation": tta.to_dict(),
        "skipped_images": sorted(skipped),
        "entries": [{k: v for k, v in r.items() if k != "predictions"} for r in rows],
    }
    markdown = render_markdown(results, figures).encode()
    html = render_html(results, figures).encode()
    with output_folder(
        out, "compare", overwrite=overwrite, owned_by=REPORT_FILES, runs_root=runs_root
    ) as out_dir:
        atomic_write_json(out_dir / "results.json", _round(results))
        for name, png in figures.items():
            atomic_write_bytes(out_dir / f"{name}.png", png)
        atomic_write_bytes(out_dir / "report.md", markdown)
        atomic_write_bytes(out_dir / "report.html", html)
    return out_dir


REPORT_FILES = ("results.json",)  # a folder holding this holds an earlier report


def _round(obj):
    from .io import _jsonable

    return _jsonable(obj)


# -- figures ------------------------------------------------------------------------------------


def _percent(v):
    return np.nan if v is None else 100 * v


def make_figures(rows, entries: list[Entry], data, readable=None) -> dict[str, bytes]:
    """The report's figures (PNG bytes by name); ``readable`` marks the samples whose image
    can be shown (unreadable ones were skipped)."""
    from .evaluation import torso_pck_by

    if readable is None:
        readable = np.ones(len(data), bool)
    plt = _plt()
    figs = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        res = r["result"]
        ax.plot(res["thresholds"], [_percent(v) for v in res["pck_curve"]], label=r["label"])
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
        vals = [_percent(s["pck@0.2"]) for s in r["result"]["per_stage"]]
        ax.plot(range(1, len(vals) + 1), vals, marker="o", label=r["label"])
    ax.set(xlabel="stage", ylabel="PCK@0.2 (%)", ylim=(0, 100), title="accuracy versus stage")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    figs["pck_by_stage"] = _figure_png(fig)

    joints = list(data.skeleton.joints)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows) + 1, 4.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        preds = r["predictions"]
        table = 100 * np.array(
            [torso_pck_by(p, data.joints, data.labelled, data.skeleton, 0) for p in preds]
        )
        im = ax.imshow(table.T, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set(
            title=r["label"],
            xlabel="stage",
            xticks=range(len(preds)),
            xticklabels=range(1, len(preds) + 1),
        )
        ax.set_yticks(range(len(joints)), joints if ax is axes[0][0] else [""] * len(joints))
    fig.colorbar(im, ax=axes[0].tolist(), label="PCK@0.2 (%)")
    figs["per_joint_by_stage"] = _figure_png(fig)

    if readable.any():
        figs.update(qualitative_figures(rows, entries, data, readable))
    return figs


def qualitative_figures(rows, entries, data, readable, n_images: int = 4) -> dict[str, bytes]:
    from .crops import person_crop
    from .evaluation import torso_pck_by
    from .visualize import belief_overlay, draw_skeleton

    plt = _plt()
    figs = {}
    shown = np.flatnonzero(readable)
    picks = list(shown[np.linspace(0, len(shown) - 1, min(n_images, len(shown))).astype(int)])
    fig, axes = plt.subplots(
        len(rows), len(picks), figsize=(2.4 * len(picks), 2.6 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c, i in enumerate(picks):
            axes[r][c].imshow(
                draw_skeleton(data[i].image, row["predictions"][-1, i], data.skeleton)
            )
            axes[r][c].set_axis_off()
            axes[r][c].set_title(f"{row['label']}: {data.names[i]}", fontsize=7)
    figs["skeletons"] = _figure_png(fig)

    models = [e for e in entries if e.model is not None]
    if models:
        i = picks[0]
        fig, axes = plt.subplots(
            len(models),
            max(e.model.num_stages for e in models),
            figsize=(2.4 * max(e.model.num_stages for e in models), 2.6 * len(models)),
            squeeze=False,
        )
        for r, e in enumerate(models):
            crop = person_crop(data[i], e.model.input_size, data.skeleton)
            beliefs = e.model.stage_beliefs(crop.image[None])
            for c in range(axes.shape[1]):
                ax = axes[r][c]
                ax.set_axis_off()
                if c < len(beliefs):
                    ax.imshow(belief_overlay(crop.image, beliefs[c][0]))
                    ax.set_title(f"{e.label} stage {c + 1}", fontsize=7)
        figs["beliefs_by_stage"] = _figure_png(fig)

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        per_image = torso_pck_by(
            row["predictions"][-1], data.joints, data.labelled, data.skeleton, 1
        )
        order = np.argsort(np.nan_to_num(per_image, nan=2.0), kind="stable")
        worst = [i for i in order if readable[i]][:3]
        for c in range(3):
            axes[r][c].set_axis_off()
        for c, i in enumerate(worst):
            axes[r][c].imshow(
                draw_skeleton(data[i].image, row["predictions"][-1, i], data.skeleton)
            )
            axes[r][c].set_title(
                f"{row['label']}: {data.names[i]} PCK {100 * per_image[i]:.1f}%", fontsize=7
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
                f"{e['megabytes']:.2f}",
                _fmt(e.get("train_seconds"), pct=False),
                str(e.get("train_data") or "-"),
            ]
        )
    return head, body


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
        f"the '{results['protocol']}' protocol, skeleton {results['skeleton']}; timing: "
        f"median ms per image (image decoding, crop, all stages and views, decoding), batch 1, "
        f"on {results['device']}. {views}Metrics in percent; PCK uses the torso normaliser."
    )


def render_markdown(results: dict, figures: dict) -> str:
    parts = ["# Pose machine comparison", "", _intro(results), ""]
    if results["notes"]:
        parts += ["## Differences that affect fairness", ""]
        parts += [f"- {n}" for n in results["notes"]] + [""]
    parts += ["## Summary", "", _md_table(*summary_table(results)), ""]
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
