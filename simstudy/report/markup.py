"""HTML pieces of the report: the page's style, escaping, and figures inlined
as SVG (text kept as text) or as PNG in ``data:`` URIs, with their notes."""

from __future__ import annotations

import base64
import html
import io
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["STYLE", "caption", "escape", "png", "svg"]

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1160px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td[rowspan]{vertical-align:top}
summary{cursor:pointer;color:#445}
table.measures td,table.measures th{white-space:nowrap;padding:1px 5px}
table.measures{font-size:12px}
th{background:#f4f4f4}td.l,th.l{text-align:left}
td{font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#777}
figure{margin:0}figure svg,figure img{max-width:100%;height:auto}
svg.tl text{font:11px system-ui,sans-serif}
"""


def escape(x: Any) -> str:
    return html.escape(str(x))


def svg(fig: Figure, salt: str) -> str:
    """The figure as inline SVG: text kept as text, ids unique per figure."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # inline SVG in HTML needs no namespaces or RDF metadata: drop every URL
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)


def png(fig: Figure, alt: str, dpi: int = 96) -> str:
    """The figure as a PNG in a ``data:`` URI (for thousands of marks)."""
    from PIL import Image  # pillow comes with matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as image:  # a 256-colour palette: a third of the bytes
        small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    data = base64.b64encode(out.getvalue()).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"


def caption(fig: Figure) -> str:
    """What a figure left out, as text under it (also printed in it)."""
    notes = getattr(fig, "notes", [])
    return (
        f"<figcaption class=muted>{'<br>'.join(escape(n) for n in notes)}</figcaption>"
        if notes
        else ""
    )
