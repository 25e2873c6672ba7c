"""Uploaded calibration files: a size limit, a type check, and a private folder per session."""

from __future__ import annotations

import tempfile
from pathlib import Path

UPLOAD_TYPES = ("txt", "jsonl", "csv")
UPLOAD_LIMIT_MB = 20


def save_upload(name: str, data: bytes, folder: str | Path | None = None, limit_mb: int = UPLOAD_LIMIT_MB) -> Path:
    """Check an uploaded file (extension, size, UTF-8 text) and write it to ``folder`` (a new temp folder if None).

    Raises ValueError naming the allowed types or the limit; nothing is written for a refused file.
    """
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise ValueError(f"{name!r} is not a text corpus: allowed types are {', '.join('.' + t for t in UPLOAD_TYPES)}")
    if len(data) > limit_mb * 2**20:
        raise ValueError(f"{name!r} is {len(data) / 2**20:.1f} MB; the limit is {limit_mb} MB")
    if not data.strip():
        raise ValueError(f"{name!r} is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name!r} is not UTF-8 text") from None
    out_dir = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="prune-upload-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"upload.{suffix}"
    path.write_bytes(data)
    return path
