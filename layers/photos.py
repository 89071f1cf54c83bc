"""Photos sent with public reports (随手拍), kept by the service itself rather than
linked from elsewhere: each upload is decoded (Pillow), refused unless it is a JPEG,
PNG or WebP image of bounded size, turned upright, scaled down to a bounded side and
written again as a JPEG — which drops every piece of metadata the camera wrote (EXIF,
with the GPS position of where the reporter stood, XMP, comments). The file is named by
the hash of what is kept, so the same photo sent twice is one file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path

from layers.errors import InvalidInput, UnsupportedMedia

FORMATS = {"JPEG", "PNG", "WEBP", "MPO"}  # MPO: the JPEG of phones with several lenses
NAME = re.compile(r"^[0-9a-f]{32}\.jpg$")


def _unsupported(detail: str, zh: str) -> UnsupportedMedia:
    return UnsupportedMedia(detail, field="photo", detail_zh=zh)


def _too_many_pixels(max_pixels: int) -> InvalidInput:
    return InvalidInput(
        f"the photo has more than {max_pixels:,} pixels",
        field="photo",
        detail_zh=f"照片像素过多（最多 {max_pixels:,} 像素）",
    )


def store(folder: Path, data: bytes, *, max_pixels: int, max_side: int) -> str:
    """Keep ``data`` as a photo in ``folder``; its file name."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidInput("the photo is empty", field="photo", detail_zh="照片为空")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                kind = probe.format
                if kind not in FORMATS:
                    raise _unsupported(
                        f"a photo is a JPEG, PNG or WebP image, not {kind}",
                        f"照片须为 JPEG、PNG 或 WebP 格式，现为 {kind}",
                    )
                if probe.width * probe.height > max_pixels:
                    raise _too_many_pixels(max_pixels)
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise _unsupported(
            "the photo is not an image that can be read", "无法读取该照片，请上传 JPEG、PNG 或 WebP 图片"
        ) from None
    rgb = upright.convert("RGB")
    rgb.thumbnail((max_side, max_side))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=85, optimize=True)  # no exif=, no icc: nothing of the camera's
    kept = out.getvalue()
    name = hashlib.sha256(kept).hexdigest()[:32] + ".jpg"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        partial = folder / f".{name}.{os.getpid()}.part"
        partial.write_bytes(kept)
        os.replace(partial, target)  # whole or absent: a reader never sees half a photo
    return name


def path(folder: Path, name: str) -> Path | None:
    """The stored photo ``name``, or None when there is none (or the name is not one of ours)."""
    if not NAME.match(name):
        return None
    p = folder / name
    return p if p.is_file() else None
