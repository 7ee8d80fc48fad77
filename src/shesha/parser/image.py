"""Images (PNG, JPEG, TIFF, GIF, BMP, WebP) read by OCR: each frame of a multi-page
TIFF is a page. Pillow opens and checks the file; Tesseract reads it (``ocr.py``)."""

from __future__ import annotations

import io

from PIL import Image, ImageSequence, UnidentifiedImageError

from shesha.errors import ParseError
from shesha.parser.bounds import DEFAULT, ParseBounds, check_pixels
from shesha.parser.document import ParsedDocument
from shesha.parser.ocr import OcrSettings, OcrUnavailable, read_pages

MAX_PIXELS = DEFAULT.pixels
"""A larger image is refused (a decompression bomb guard, as Pillow's own)."""
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)  # one limit: ours


def _frames(data: bytes, name: str, bounds: ParseBounds) -> list[bytes]:
    """Each frame as a greyscale PNG, checked by decoding it fully. Every frame of a
    GIF or TIFF decodes to the whole canvas: the pixels of all of them are bounded
    before the first is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            count = getattr(image, "n_frames", 1)
            check_pixels(image.width, image.height, min(count, bounds.frames), name, bounds)
            frames: list[bytes] = []
            for frame in ImageSequence.Iterator(image):
                if len(frames) == bounds.frames:
                    break
                out = io.BytesIO()
                frame.convert("L").save(out, format="PNG")
                frames.append(out.getvalue())
            return frames
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ParseError(
            f"{name}: the image is damaged or not an image Pillow can read ({e}).",
            hint="Open it in an image viewer to check it, or export it again as PNG.",
        ) from e


def parse_image(
    data: bytes,
    name: str,
    sha256: str,
    ocr: OcrSettings | None,
    bounds: ParseBounds = DEFAULT,
) -> ParsedDocument:
    frames = _frames(data, name, bounds)
    warnings: list[str] = []
    texts = [""] * len(frames)
    read: list[int] = []
    if ocr is None or not ocr.enabled:
        warnings.append("an image has no text layer and OCR is off, so its text is empty")
    else:
        try:
            texts = read_pages(frames, ocr)
            read = list(range(1, len(frames) + 1))
            warnings.append("read by OCR: a machine's reading, check names and numbers that matter")
        except OcrUnavailable as e:
            warnings.append(f"an image has no text layer and OCR could not run: {e}")
    if len(frames) == bounds.frames:
        warnings.append(f"only the first {bounds.frames} frames were read")
    if read and not any(t.strip() for t in texts):
        warnings.append("OCR found no text in the image")
    if len(frames) == 1:
        text = texts[0]
    else:
        text = "\n\n".join(f"--- Page {i} ---\n{t}" for i, t in enumerate(texts, start=1))
    text = text + "\n" if text else ""
    return ParsedDocument.of(
        text,
        data,
        sha256,
        fmt="image",
        pages=len(frames),
        parser="image:pillow+tesseract" if read else "image:pillow",
        ocr_pages=read,
        warnings=warnings,
    )
