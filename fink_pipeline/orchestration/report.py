"""Run-summary renderings shown in the Dagster UI: alerts per class and night, as PNG and Markdown.

Plain functions (no Dagster import): the assets call them and wrap the result in metadata.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

MAX_CLASSES_PLOTTED = 12


def class_night_table(per_class_night: dict[str, dict[str, int]]) -> str:
    """A Markdown table: one row per class (most alerts first), one column per night, totals."""
    nights = sorted({night for counts in per_class_night.values() for night in counts})
    if not nights:
        return "_no alert published_"
    classes = sorted(per_class_night, key=lambda c: (-sum(per_class_night[c].values()), c))
    lines = ["| class | " + " | ".join(nights) + " | total |", "|---|" + "---:|" * (len(nights) + 1)]
    for label in classes:
        counts = per_class_night[label]
        cells = [f"{counts.get(n, 0):,}" for n in nights]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sum(counts.values()):,} |")
    totals = [f"{sum(per_class_night[c].get(n, 0) for c in classes):,}" for n in nights]
    grand = sum(sum(c.values()) for c in per_class_night.values())
    lines.append("| **total** | " + " | ".join(totals) + f" | **{grand:,}** |")
    return "\n".join(lines)


def class_night_png(per_class_night: dict[str, dict[str, int]], title: str) -> bytes:
    """A grouped bar chart of alerts per class (bars) and night (colours), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the file is rendered off-screen
    import matplotlib.pyplot as plt
    import numpy as np

    nights = sorted({night for counts in per_class_night.values() for night in counts})
    classes = sorted(per_class_night, key=lambda c: (-sum(per_class_night[c].values()), c))[:MAX_CLASSES_PLOTTED]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(classes) + 2), 3.6), dpi=100)
    try:
        x = np.arange(len(classes))
        width = 0.8 / max(1, len(nights))
        for i, night in enumerate(nights):
            values = [per_class_night[c].get(night, 0) for c in classes]
            ax.bar(x + i * width - 0.4 + width / 2, values, width, label=night)
        ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("alerts")
        ax.set_title(title, fontsize=9)
        if nights:
            ax.legend(title="night", fontsize=7, title_fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def start_class_night_png(per_class_night: dict[str, dict[str, int]], title: str) -> Callable[[], bytes]:
    """Start drawing `class_night_png` in a child Python process; returns the function that
    waits for its PNG bytes.

    The chart costs ~1 CPU-s (most of it importing matplotlib). Drawn in the transfer's own
    process once the topic is published, it took the GIL from the thread still filling the
    table; the child runs on the core the finished publishing tasks left free. If the child
    fails, the chart is drawn here (and its error, if any, is raised here)."""
    try:
        child = subprocess.Popen([sys.executable, "-c", _DRAW_IN_CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:  # no interpreter to start: drawn here
        return lambda: class_night_png(per_class_night, title)
    try:
        child.stdin.write(json.dumps({"counts": per_class_night, "title": title}).encode())
        child.stdin.close()
    except OSError:  # the child died at once: drawn here below
        pass

    def result() -> bytes:
        with child.stdout:
            png = child.stdout.read()
        if child.wait() == 0 and png.startswith(b"\x89PNG"):
            return png
        return class_night_png(per_class_night, title)

    return result


_DRAW_IN_CHILD = ("import json, sys\n"
                  "from fink_pipeline.orchestration.report import class_night_png\n"
                  "spec = json.load(sys.stdin)\n"
                  "sys.stdout.buffer.write(class_night_png(spec['counts'], spec['title']))\n")


def save_png(png: bytes, path: Path) -> Path:
    """Write the image (its folder is created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown embedding the PNG inline (base64), so the UI shows it without serving a file."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def archive_files(folders: list[str]) -> list[tuple[str, int]]:
    """(path, size) of every file under `folders` (paths or object-store URIs, kept in their form)."""
    import pyarrow.fs as pafs

    from fink_pipeline.archive.layout import resolve

    files = []
    for folder in folders:
        fs, path = resolve(folder)
        scheme = folder.split("://", 1)[0] + "://" if "://" in folder else ""
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File and not info.base_name.startswith((".", "_")):
                files.append((scheme + info.path, info.size or 0))
    return files
