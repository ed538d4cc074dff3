"""A BRSR document rendered: HTML (self-contained, escaped, every figure and mark), PDF
(A4, the same bytes from the same document), CSV (the document's rows)."""

from __future__ import annotations

import csv
import re
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from reporting.brsr import Denominators
from reporting.document import BrsrRequest, brsr_document
from reporting.render import render_csv, render_html, render_pdf
from tests.reporting.golden_lake import TENANT, Branch, Device, GoldenLake, counter_series, ist

FY = "2023-24"
HOSTILE = "<script>alert(1)</script> & Sons"


class _Walk(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _doc(tmp: Path, *, months: int) -> dict[str, Any]:
    lake = GoldenLake(tmp)
    lake.reference(
        [Branch("kaveri-b1", site_name=HOSTILE), Branch("kaveri-b2")],
        [Device("em-1", "kaveri-b1", "meter", 3600), Device("em-2", "kaveri-b2", "meter", 3600)],
    )
    end = date(2023, 4 + months, 1) if months < 9 else date(2024, 4, 1)
    rows = []
    for device, branch, kwh in (("em-1", "kaveri-b1", 1000.0), ("em-2", "kaveri-b2", 500.0)):
        rows += counter_series(
            device, branch, ist(date(2023, 4, 1)), ist(end), 3600, kwh, "energy_import_kwh"
        )
    for r in rows:
        r["energy_export_kwh"] = 0.0
    lake.readings("meter_readings", rows)
    with lake.session() as session:
        doc, _ = brsr_document(
            session, lake.store, lake.registry,
            BrsrRequest(TENANT, FY, Denominators(turnover_inr={FY: 1e9}), allow_proxy=True),
        )  # fmt: skip
    return doc


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _doc(tmp_path_factory.mktemp("partial"), months=1)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _doc(tmp_path_factory.mktemp("full"), months=12)


def test_html_is_self_contained_escaped_and_shows_every_figure(partial: dict[str, Any]) -> None:
    html = render_html(partial)
    walk = _Walk()
    walk.feed(html)
    assert "script" not in walk.tags  # the hostile site name is text, not a tag
    assert HOSTILE in "".join(walk.text)
    assert "&lt;script&gt;" in html
    assert not [r for r in walk.refs if r.startswith(("http://", "https://", "//"))]
    assert "svg" in walk.tags  # charts inline
    text = "".join(walk.text)
    for fact in partial["facts"]:
        assert fact["concept"] in text
        if fact["value"] is not None:
            assert f"{fact['value']:,.{fact['decimals']}f}" in text, fact["key"]
    assert "not given" in text  # the previous year's intensity has no turnover
    assert "[P]" in text  # Scope 2 of FY 2022-23 used a proxy grid factor
    assert "not the financial year" in text  # one month of data


def test_a_full_year_has_no_coverage_note(full: dict[str, Any]) -> None:
    html = render_html(full)
    assert 'id="coverage-note"' not in html
    months = re.findall(r"<tr><td>(\d{4}-[01]\d)</td>", html)
    assert months == sorted(months)
    assert len(months) == 24  # every month of both years, in order


def test_pdf_is_a4_deterministic_and_says_what_it_covers(
    partial: dict[str, Any], full: dict[str, Any], tmp_path: Path
) -> None:
    first, second = tmp_path / "a.pdf", tmp_path / "b.pdf"
    render_pdf(full, first)
    render_pdf(full, second)
    data = first.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data == second.read_bytes()  # the same document gives the same bytes
    pages = re.search(rb"/Count (\d+)", data)
    assert pages is not None
    assert int(pages.group(1)) >= 2
    assert b"/MediaBox [0 0 595.28 841.89]" in data  # A4
    render_pdf(partial, tmp_path / "p.pdf")
    assert (tmp_path / "p.pdf").stat().st_size > 10_000


def test_csv_files_hold_the_documents_rows(partial: dict[str, Any], tmp_path: Path) -> None:
    paths = render_csv(partial, tmp_path)
    assert [p.name for p in paths] == ["facts.csv", "branches.csv", "months.csv", "factors.csv"]
    with (tmp_path / "facts.csv").open() as handle:
        facts = list(csv.DictReader(handle))
    assert len(facts) == len(partial["facts"])
    for got, want in zip(facts, partial["facts"], strict=True):
        assert got["concept"] == want["concept"]
        assert got["value"] == ("" if want["value"] is None else str(want["value"]))
    with (tmp_path / "branches.csv").open() as handle:
        branches = list(csv.DictReader(handle))
    assert {b["site_name"] for b in branches} >= {HOSTILE}
