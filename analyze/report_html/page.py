"""One self-contained HTML file: the report's data as JSON inside the page, drawn by inline script.

No network fetch: styles and scripts are inline, no font, image or script is loaded from anywhere, and
a Content-Security-Policy forbids any connection. Archive strings reach the page only as JSON data,
escaped so that nothing in them can close the script element, and the script writes them with
textContent, never as HTML.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
       "connect-src 'none'; form-action 'none'; base-uri 'none'")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON that is safe inside <script type="application/json">: '<', '>' and '&' as \\u escapes, so
    no string from the archive can end the element or open a comment."""
    text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any], title: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{_asset('report.css')}</style></head>"
        "<body><main id=\"report\"><noscript>This report draws itself with JavaScript.</noscript></main>"
        f"<script type=\"application/json\" id=\"report-data\">{embed_json(data)}</script>"
        f"<script>{_asset('report.js')}</script></body></html>\n")
