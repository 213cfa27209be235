"""docs/dashboard.md describes the history endpoints as serd/dashboard/history.py serves them: every
route, and the limits with the values the code uses (docs match code)."""

from __future__ import annotations

import re
from pathlib import Path

from serd.dashboard import history
from serd.dashboard.server import STATIC_FILES
from serd.messages import MAX_DEVICE_CHARS

DOCS = " ".join((Path(__file__).resolve().parents[1] / "docs" / "dashboard.md").read_text(encoding="utf-8").split())
"""The page with its line breaks as spaces: a phrase may wrap."""


def test_every_history_route_and_page_is_documented():
    routes = set(re.findall(r'"(\w+)": self\._\w+', Path(history.__file__).read_text(encoding="utf-8")))
    assert routes == {"rooms", "room", "table"}
    for route in routes:
        assert f"`GET {history.PREFIX}{route}" in DOCS, route
    for path in ("/history.html", "/history.js", "/history.css"):
        assert path in STATIC_FILES and path in DOCS, path


def test_the_documented_limits_are_the_codes():
    assert f"at most {history.MAX_STEPS:,} steps" in DOCS
    assert f"at most {history.MAX_GAPS:,}" in DOCS
    assert DOCS.count(f"(1–{history.MAX_DAYS}, default 7)") == 2
    assert f"a room name of 1–{MAX_DEVICE_CHARS} characters" in DOCS
    assert "History lives in memory only" not in DOCS
