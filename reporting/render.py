"""A BRSR report document rendered for people and tools: HTML (self-contained: inline CSS and
SVG charts, no script, no external reference), PDF (A4, tables and charts), and CSV (facts,
branches, months, factors). Everything is rendered from ``report.json``'s document
(``reporting.document``); nothing is computed here but formatting and the charts' sums.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure

from durable.files import atomic_file

__all__ = ["render_csv", "render_dg_files", "render_html", "render_pdf"]

_ROWS_EI1 = ("A", "B", "C", "ABC", "D", "E", "F", "DEF", "total")
_INTENSITY_EI1 = ("EI_turnover", "EI_ppp", "EI_output")
_ROWS_EI7 = ("S1", "S2", "SI_turnover", "SI_ppp", "SI_output")
_SOURCES = (("D", "grid electricity"), ("E", "diesel (DG)"), ("A", "solar on site"))
_LOW_COVERAGE = 0.95
_CSV_TABLES = ("facts", "branches", "months", "factors")


def _number(value: Any, decimals: int) -> str:
    if value is None:
        return "not given"
    return f"{float(value):,.{decimals}f}"


def _partial_note(doc: dict[str, Any]) -> str | None:
    """A plain sentence when the data do not cover the financial year (None: they do)."""
    rows = [b for b in doc["branches"] if b["fy"] == doc["fy"]]
    if not rows:
        return f"There are no readings for FY {doc['fy']}: every figure is 0."
    coverage = [float(b["coverage_meter"]) for b in rows if b.get("coverage_meter") is not None]
    worst = min(coverage) if coverage else 0.0
    if worst >= _LOW_COVERAGE:
        return None
    days = sum(float(b.get("coverage_meter") or 0.0) for b in rows) / max(len(rows), 1) * 365
    return (
        f"These figures cover about {days:.0f} day(s) of meter readings per branch, not the"
        f" financial year {doc['fy']}: the lowest branch coverage is {worst:.1%}. Missing"
        " readings are not filled in."
    )


def _chart_monthly(doc: dict[str, Any], size: tuple[float, float]) -> Figure:
    months = sorted(doc["months"], key=lambda m: m["month"])
    labels = [m["month"] for m in months]
    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    bottom = [0.0] * len(months)
    for key, name in _SOURCES:
        values = [float(m.get(key) or 0.0) for m in months]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("Energy by source (GJ)")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    s1 = [float(m.get("S1") or 0.0) for m in months]
    s2 = [float(m.get("S2") or 0.0) for m in months]
    ax2.bar(labels, s2, label="Scope 2")
    ax2.bar(labels, s1, bottom=s2, label="Scope 1")
    ax2.set_title("Emissions (t CO2e)")
    ax2.legend(fontsize=7)
    ax2.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    return fig


def _chart_branches(doc: dict[str, Any], size: tuple[float, float]) -> Figure:
    rows = sorted(
        (b for b in doc["branches"] if b["fy"] == doc["fy"]),
        key=lambda b: -float(b["total_gj"]),
    )[:20]
    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([b["branch_id"] for b in rows][::-1], [float(b["total_gj"]) for b in rows][::-1])
    ax.set_title(f"Energy per branch, FY {doc['fy']} (GJ; the 20 largest)")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def _svg(fig: Figure) -> Markup:
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return Markup(text[text.index("<svg") :])  # noqa: S704 - matplotlib's own SVG, no input


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _figure_rows(doc: dict[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
    facts = {(f["key"], f["fy"]): f for f in doc["facts"]}
    rows = []
    for key in keys:
        cells = []
        label = unit = concept = ""
        for fy in (doc["fy"], doc["previous_fy"]):
            f = facts.get((key, fy))
            if f is None:
                cells.append({"text": "", "marks": ""})
                continue
            label, unit, concept = f["label"], f["unit"], f["concept"]
            marks = ("P" if f["proxy"] else "") + ("E" if f["estimated"] else "")
            text = _number(f["value"], int(f["decimals"]))
            if f["value"] is None:
                text = "not given (no denominator)"
            estimated = (
                f"of which estimated {_number(f['estimated'], int(f['decimals']))}"
                if f["estimated"]
                else ""
            )
            cells.append({"text": text, "marks": marks, "estimated": estimated})
        rows.append({"key": key, "label": label, "concept": concept, "unit": unit, "cells": cells})
    return rows


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reporting", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["pct"] = lambda v: "" if v is None else f"{float(v):.1%}"
    env.filters["low"] = lambda v: v is not None and float(v) < _LOW_COVERAGE
    return env


def render_html(doc: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    template = _environment().get_template("brsr.html.j2")
    return template.render(
        doc=doc,
        note=_partial_note(doc),
        ei1=_figure_rows(doc, _ROWS_EI1),
        ei1_intensity=_figure_rows(doc, _INTENSITY_EI1),
        ei7=_figure_rows(doc, _ROWS_EI7),
        years=(doc["fy"], doc["previous_fy"]),
        branches=sorted(doc["branches"], key=lambda b: (b["branch_id"], b["fy"])),
        months=sorted(doc["months"], key=lambda m: m["month"]),
        monthly_chart=_svg(_chart_monthly(doc, (10, 3.6))),
        branch_chart=_svg(_chart_branches(doc, (8, 4))),
    )


def render_csv(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """facts.csv, branches.csv, months.csv and factors.csv: the document's rows, columns in
    the document's order."""
    paths = []
    for name in _CSV_TABLES:
        rows: list[dict[str, Any]] = doc[name]
        columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else []
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
        path = out_dir / f"{name}.csv"
        with atomic_file(path) as handle:
            handle.write(text.getvalue().encode("utf-8"))
        paths.append(path)
    return paths


# -- PDF ------------------------------------------------------------------------------------

_LATIN = str.maketrans(
    {"₂": "2", "–": "-", "—": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "≥": ">="}
)


def _latin(text: Any) -> str:
    """Core PDF fonts cover latin-1 only: common characters mapped, others replaced."""
    return str(text).translate(_LATIN).encode("latin-1", "replace").decode("latin-1")


def render_pdf(doc: dict[str, Any], out: Path) -> None:
    """The report as an A4 PDF (the same content as the HTML, for print)."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    class _Pdf(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", "B", 9)
            self.cell(0, 6, _latin(f"BRSR Principle 6 - {doc['tenant']} - FY {doc['fy']}"))
            self.ln(8)

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", "", 8)
            self.cell(0, 6, f"page {self.page_no()}/{{nb}}", align="C")

    pdf = _Pdf(format="A4")

    def para(text: str, size: float = 9, style: str = "", height: float = 5) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.set_x(pdf.l_margin)
        pdf.multi_cell(0, height, _latin(text), new_x="LMARGIN", new_y="NEXT")

    pdf.set_creation_date(datetime.fromisoformat(str(doc["generated_at"])))
    pdf.set_title(_latin(f"BRSR {doc['tenant']} FY {doc['fy']}"))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    para(f"Energy and emissions (BRSR Principle 6), {doc['tenant']}", 14, "B", 7)
    para(
        f"FY {doc['fy']} and FY {doc['previous_fy']}. Generated {doc['generated_at']} by"
        f" {doc['principal']} for {doc['purpose']}."
    )
    note = _partial_note(doc)
    if note:
        para("NOTE: " + note, 9, "B")
    heading = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))

    def table(
        title: str, header: list[str], rows: list[list[str]], widths: tuple[int, ...]
    ) -> None:
        pdf.ln(2)
        para(title, 10, "B", 6)
        pdf.set_font("Helvetica", "", 7)
        with pdf.table(col_widths=widths, headings_style=heading, line_height=4) as t:
            t.row([_latin(h) for h in header])
            for r in rows:
                t.row([_latin(c) for c in r])

    years = [doc["fy"], doc["previous_fy"]]
    for title, keys in (
        ("Essential Indicator 1: energy", _ROWS_EI1 + _INTENSITY_EI1),
        ("Essential Indicator 7: emissions", _ROWS_EI7),
    ):
        rows = []
        for r in _figure_rows(doc, keys):
            cells = [c["text"] + (f" [{c['marks']}]" if c["marks"] else "") for c in r["cells"]]
            rows.append([r["label"], *cells, r["unit"]])
        table(title, ["", f"FY {years[0]}", f"FY {years[1]}", "unit"], rows, (80, 35, 35, 30))
    para("[P] computed with a proxy factor (another year's); [E] includes an estimate.", 7, "", 4)
    pdf.image(io.BytesIO(_png(_chart_monthly(doc, (10, 3.6)))), w=180)
    branch_rows = [
        [b["branch_id"], b["fy"], _number(b["D"], 2), _number(b["E"], 2), _number(b["A"], 2),
         _number(b["total_gj"], 2), _number(b["S1"], 3), _number(b["S2"], 3),
         "" if b["coverage_meter"] is None else f"{b['coverage_meter']:.1%}"]
        for b in sorted(doc["branches"], key=lambda b: (b["branch_id"], b["fy"]))
    ]  # fmt: skip
    table(
        "Per branch",
        ["branch", "FY", "D GJ", "E GJ", "A GJ", "total GJ", "S1 t", "S2 t", "meter coverage"],
        branch_rows,
        (30, 16, 20, 20, 20, 22, 18, 18, 22),
    )
    month_rows = [
        [m["month"], _number(m["D"], 2), _number(m["E"], 2), _number(m["A"], 2),
         _number(m["S1"], 3), _number(m["S2"], 3),
         "" if m["coverage_meter"] is None else f"{m['coverage_meter']:.1%}"]
        for m in sorted(doc["months"], key=lambda m: m["month"])
    ]  # fmt: skip
    table(
        "Per month",
        ["month", "D GJ", "E GJ", "A GJ", "S1 t", "S2 t", "meter coverage"],
        month_rows,
        (25, 25, 25, 25, 25, 25, 30),
    )
    factor_rows = [
        [u["for_fy"], u["factor"], f"{u['value']:g} {u['unit']}", u["version"], u["variant"],
         "yes" if u["proxy"] else "", u["source"]]
        for u in doc["factors"]
    ]  # fmt: skip
    table(
        "Factors",
        ["for FY", "factor", "value", "version", "variant", "proxy", "source"],
        factor_rows,
        (14, 24, 24, 28, 20, 10, 70),
    )
    inputs = [[i["table"], "absent" if i["version"] is None else str(i["version"])]
              for i in doc["inputs"]]  # fmt: skip
    ft = doc["factor_table"]
    inputs.append([ft["table"], str(ft["version"])])
    table("Inputs (tables at the versions read)", ["table", "version"], inputs, (150, 30))
    pdf.ln(2)
    para("Method", 10, "B", 6)
    for line in doc["method"]:
        para("- " + line, 8, "", 4)
    with atomic_file(out) as handle:
        handle.write(bytes(pdf.output()))


# -- the CAQM DG operation log ---------------------------------------------------------------

_DG_COLUMNS = (
    "run_key", "device_id", "branch_id", "start", "stop", "duration_h", "readings", "kwh",
    "fuel_l", "avg_load_pct", "stage", "grap_order", "rule", "daily_cap_h", "day_total_h",
    "flags",
)  # fmt: skip


def _months(doc: dict[str, Any]) -> list[str]:
    first = datetime.fromisoformat(doc["period"]["from"])
    last = datetime.fromisoformat(doc["period"]["to"])
    months, y, m = [], first.year, first.month
    while (y, m) <= (last.year, last.month):
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def _ist_month(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(ZoneInfo("Asia/Kolkata")).strftime("%Y-%m")


def _dg_cell(run: dict[str, Any], column: str) -> str:
    value = run.get(column)
    if column == "flags":
        return ";".join(value or [])
    if column == "day_total_h":
        return ";".join(f"{d}={h:g}" for d, h in sorted((value or {}).items()))
    return "" if value is None else str(value)


def render_dg_files(doc: dict[str, Any], folder: Path) -> list[Path]:
    """Per DG set and month of the window: ``dg-log-<set>-<YYYY-MM>.csv`` and ``.pdf`` (a
    month without runs too: an empty log is a record as well)."""
    paths: list[Path] = []
    for s in doc["sets"]:
        for month in _months(doc):
            runs = [
                r for r in doc["runs"]
                if r["device_id"] == s["device_id"] and _ist_month(r["start"]) == month
            ]  # fmt: skip
            stem = f"dg-log-{s['device_id']}-{month}"
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(_DG_COLUMNS)
            for run in runs:
                writer.writerow([_dg_cell(run, c) for c in _DG_COLUMNS])
            path = folder / f"{stem}.csv"
            with atomic_file(path) as handle:
                handle.write(text.getvalue().encode("utf-8"))
            paths.append(path)
            paths.append(_dg_pdf(doc, s, month, runs, folder / f"{stem}.pdf"))
    return paths


def _dg_pdf(
    doc: dict[str, Any], dg: dict[str, Any], month: str, runs: list[dict[str, Any]], out: Path
) -> Path:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_creation_date(datetime.fromisoformat(str(doc["generated_at"])))
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()

    def para(text: str, size: float = 9, style: str = "") -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.set_x(pdf.l_margin)
        pdf.multi_cell(0, 5, _latin(text), new_x="LMARGIN", new_y="NEXT")

    para(f"DG operation log: {dg['device_id']} ({dg['branch_id']}), {month}", 13, "B")
    para(
        f"Tenant {doc['tenant']}. Rated {dg.get('rated_power_kw')} kW, fuel"
        f" {dg.get('fuel_type')}, emission control {dg.get('emission_control') or 'not recorded'},"
        f" certificate {dg.get('certificate_ref') or 'none on record'}. Generated"
        f" {doc['generated_at']} by {doc['principal']} ({doc['purpose']})."
    )
    if not runs:
        para("No run of this set started in this month.", 10, "B")
    else:
        pdf.set_font("Helvetica", "", 7)
        header = ["start (UTC)", "stop (UTC)", "hours", "kWh", "fuel L", "load %", "GRAP",
                  "rule", "cap h", "day total h", "flags"]  # fmt: skip
        heading = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))
        widths = (34, 34, 14, 16, 16, 14, 12, 36, 12, 34, 55)
        with pdf.table(col_widths=widths, headings_style=heading, line_height=4) as table:
            table.row(header)
            for r in runs:
                cells = [r["start"][:19], r["stop"][:19], f"{r['duration_h']:.2f}",
                         f"{r['kwh']:.1f}", f"{r['fuel_l']:.1f}",
                         "" if r["avg_load_pct"] is None else f"{r['avg_load_pct']:.0f}",
                         "" if r["stage"] is None else str(r["stage"]), r["rule"] or "",
                         "" if r["daily_cap_h"] is None else f"{r['daily_cap_h']:g}",
                         _dg_cell(r, "day_total_h"), ", ".join(r["flags"])]  # fmt: skip
                table.row([_latin(c) for c in cells])
    para(
        "Flags: OVER_DAILY_CAP (running hours that IST day over the class's cap),"
        " NOT_ALLOWED_IN_STAGE, EMERGENCY_ONLY (allowed for listed emergency services only),"
        " NO_CERTIFICATE_ON_RECORD, NOT_IN_NCR (rules not applicable), NO_RULE, GAP_IN_RUN,"
        " DATA_GAP (the set fell silent while running: logged to its last reading)."
        " The log is append-only and hash-chained: energylake report verify.",
        7,
    )
    with atomic_file(out) as handle:
        handle.write(bytes(pdf.output()))
    return out
