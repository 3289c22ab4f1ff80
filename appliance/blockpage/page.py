"""The block page itself: what it says for each reason (templates/page.html), and the headers it goes
out with. No script, no external file: the style sheet is inline and allowed by its hash alone."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup

from appliance.blockpage.reason import Kind, Reason

TEMPLATES = Path(__file__).parent / "templates"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True
)
CSS = (TEMPLATES / "page.css").read_text()
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The blocked address stays on the appliance: the unblock form is told the site in its link.
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # The page answers for a blocked name: a cached copy would outlive an unblock.
    "Cache-Control": "no-store",
}

# For a connection that is from no LAN client (nothing is explained to it).
NOT_HERE = (
    "<!doctype html><meta charset=utf-8><title>Not available</title>"
    "<p>This page is for the school network only.</p>\n"
)


@dataclass(frozen=True)
class View:
    """What the page knows besides the reason."""

    school: str
    site: str | None  # None: no site asked about; "": not a valid site name
    group: str  # the client's group (config name)
    layer: str  # where it was blocked: "dns" or "http"
    client: str  # the device's address, for IT
    time: datetime  # local time
    webui_url: str  # the web UI's address, "" if not known


def unblock_link(view: View) -> str | None:
    """The web UI's request form for this site and group (docs/webui.md), if the address is known."""
    if not view.webui_url or not view.site:
        return None
    return f"{view.webui_url}/requests/new?" + urlencode(
        {"site": view.site, "group": view.group, "layer": view.layer}
    )


def status(view: View, found: Reason | None) -> int:
    if view.site is None:
        return 200
    if not view.site:
        return 400
    return 200 if found is not None and found.kind == Kind.ALLOWED else 403


def render(view: View, found: Reason | None) -> tuple[int, str]:
    """The HTTP status and the page. found is None when there is no policy to ask (none applied, or
    none for this group)."""
    t = view.time
    html = _env.get_template("page.html").render(
        view=view,
        found=found,
        kind=found.kind.value if found else None,
        when=f"{t:%A} {t.day} {t:%B %Y}, {t:%H:%M}",
        link=unblock_link(view) if found is not None and found.kind.can_request else None,
        css=Markup(CSS),  # our own file, allowed by its hash in the CSP
    )
    return status(view, found), html
