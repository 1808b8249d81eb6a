"""Fingerprints of input files and folders: what a result was computed from, cheaply enough to check on
every run.

A result that silently outlives its data is wrong without a word (an input replaced at the same path), so
every input is fingerprinted where the prepared data and each result are written, and compared on the next
run. Reading a whole 10 GiB input at every `spotsweep run` is too slow, so:

- a small file (at most `SMALL_FILE` bytes) is hashed whole;
- a large file is its size, its modification time and a hash of `N_BLOCKS` blocks spread over it (the first
  and last included): the mtime catches an edit between the sampled blocks, which the hash cannot see;
- a folder (a Zarr store, a MERSCOPE output) is its list of files with their sizes, the content of its
  small metadata files, and the fingerprints of up to `N_FILES` of its other files spread over the list
  (every file, where there are fewer): a chunk added, dropped or rewritten at another size shows.

Measured: results/benchmarks.md ("Input fingerprints").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

SMALL_FILE = 64 << 20
"""Files up to this size are hashed whole (about 0.1 s at 1 GB/s)."""
BLOCK = 1 << 20
N_BLOCKS = 16
"""A large file's hash reads N_BLOCKS blocks of BLOCK bytes: 16 MiB, whatever its size."""
N_FILES = 64
"""A folder's hash reads at most this many of its files beside the metadata."""
METADATA_NAMES = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})

Fingerprint = dict[str, Any]


def fingerprint(path: Path | str) -> Fingerprint:
    """The fingerprint of a file or folder (see the module docstring); a missing path is {"kind": "missing"}."""
    path = Path(path)
    if path.is_dir():
        return _folder(path)
    if path.is_file():
        return _file(path)
    return {"kind": "missing"}


def _file(path: Path) -> Fingerprint:
    size = path.stat().st_size
    if size <= SMALL_FILE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
        return {"kind": "file", "size": size, "sha256": digest.hexdigest()}
    return {"kind": "file-sampled", "size": size, "mtime_ns": path.stat().st_mtime_ns, "sha256": _sampled(path, size)}


def _sampled(path: Path, size: int) -> str:
    """A hash of N_BLOCKS blocks at evenly spaced offsets, the first at 0 and the last at the end."""
    digest = hashlib.sha256(str(size).encode())
    step = (size - BLOCK) / (N_BLOCKS - 1)
    with open(path, "rb") as handle:
        for index in range(N_BLOCKS):
            handle.seek(int(index * step))
            digest.update(handle.read(BLOCK))
    return digest.hexdigest()


def _folder(path: Path) -> Fingerprint:
    files = sorted(
        (Path(root, name).relative_to(path).as_posix(), Path(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
    digest = hashlib.sha256()
    total = 0
    for relative, full in files:
        size = full.stat().st_size
        total += size
        digest.update(f"{relative}\0{size}\n".encode())
    metadata = [(relative, full) for relative, full in files if full.name in METADATA_NAMES]
    others = [(relative, full) for relative, full in files if full.name not in METADATA_NAMES]
    if len(others) > N_FILES:
        others = [others[round(i * (len(others) - 1) / (N_FILES - 1))] for i in range(N_FILES)]
    for relative, full in [*metadata, *others]:
        digest.update(f"{relative}\0{sorted(_file(full).items())}\n".encode())
    return {"kind": "folder", "files": len(files), "size": total, "sha256": digest.hexdigest()}


def describe_change(old: Fingerprint, new: Fingerprint) -> str:
    """How `new` differs from `old`, in a few words for a one-sentence message."""
    if new.get("kind") == "missing":
        return "it no longer exists"
    if old.get("kind") != new.get("kind"):
        return f"it was a {old.get('kind')} and is now a {new.get('kind')}"
    if old.get("files") != new.get("files"):
        return f"its files went from {old.get('files')} to {new.get('files')}"
    if old.get("size") != new.get("size"):
        return f"its size went from {old.get('size'):,} to {new.get('size'):,} bytes"
    if old.get("sha256") != new.get("sha256"):
        return "its content differs"
    return "its modification time differs (a large file is checked by samples and its mtime)"
