"""`trace report`: the whole capture as one self-contained HTML page (data.py builds, page.py writes)."""

from uetrace.analyze.report_html.data import ReportParams, build
from uetrace.analyze.report_html.page import render_page

__all__ = ["ReportParams", "build", "render_page"]
