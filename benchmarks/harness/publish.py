"""Putting a run's report and charts into docs/benchmarks.md (between its
results markers) and docs/benchmarks-*.png, for `run.py --publish`."""
import os
import shutil

from . import report
from .build import REPO

DOCS = os.path.join(REPO, "docs")
PAGE = os.path.join(DOCS, "benchmarks.md")
BEGIN = "<!-- results: begin (written by benchmarks/run.py --publish) -->"
END = "<!-- results: end -->"
DOC_CHART_NAMES = {"echo-rps.png": "benchmarks-echo.png", "echo-ir.png": "benchmarks-ir.png"}


def publish(out_dir, results, chart_files):
    doc_charts = []
    for name, title in chart_files:
        target = DOC_CHART_NAMES.get(name, f"benchmarks-{name}")
        shutil.copyfile(os.path.join(out_dir, name), os.path.join(DOCS, target))
        doc_charts.append((target, title))
    body = report.render(results, doc_charts, title="## Latest run")
    with open(PAGE) as f:
        page = f.read()
    if BEGIN in page and END in page:
        head, rest = page.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
    else:
        head, tail = page.rstrip("\n") + "\n\n", "\n"
    with open(PAGE, "w") as f:
        f.write(f"{head}{BEGIN}\n\n{body}\n{END}{tail}")
