"""Labelled grain images (PNG, TIFF, .npy): reading them, and the checks whose messages
the user sees on one line.

Apart from nzsp_fem.mesh.image because spec.validate checks an image before any mesh is
built, and image.py (the geometry) imports spec.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SUFFIXES = (".png", ".tif", ".tiff", ".npy")
# Largest stray part of a label that joins a neighbour (see grain_labels).
FRAGMENT_PIXELS = 10


class ImageError(ValueError):
    """A bad label image; the message does not name the config key (the caller adds it)."""


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        # "P": palette indices are the labels (np.asarray gives the indices, not the colours)
        if mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
            return np.asarray(im)
        if mode in ("LA", "PA"):
            return np.asarray(im)[..., 0]
        if mode in ("RGB", "RGBA"):
            rgb = np.asarray(im)[..., :3]
            # Grey labels saved as RGB by many tools: all channels equal is one channel.
            if (rgb == rgb[..., :1]).all():
                return rgb[..., 0]
            raise ImageError(
                f"{path.name} is a colour ({mode}) image: expected one channel of integer grain labels "
                "(a grey-level or palette PNG, a TIFF or a .npy array)"
            )
    raise ImageError(f"{path.name}: PNG mode {mode!r} is not a label image (expected grey-level or palette)")


def read_labels(path: str | Path) -> np.ndarray:
    """The label array of an image file, (rows, columns) int64, row 0 at the top."""
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise ImageError(f"{p.name}: unsupported file type {p.suffix!r} (use {', '.join(SUFFIXES)})")
    if not p.is_file():
        raise ImageError(f"no such file: {p}")
    try:
        if p.suffix.lower() == ".npy":
            a = np.load(p, allow_pickle=False)
        elif p.suffix.lower() == ".png":
            a = _read_png(p)
        else:
            import tifffile

            a = tifffile.imread(p)
    except ImageError:
        raise
    except Exception as err:  # PIL, tifffile and numpy raise many types for a broken file
        raise ImageError(f"{p.name}: cannot read ({_first_line(err)})") from None
    return _as_labels(np.asarray(a), p.name)


def _as_labels(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ImageError(f"{name}: expected a 2D image of grain labels, got an array of shape {a.shape}")
    if min(a.shape) < 2:
        raise ImageError(f"{name}: an image of {a.shape[1]} x {a.shape[0]} pixels is too small")
    if a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating):
        # 32-bit float label images (e.g. from Fiji) hold whole numbers: accept those; a
        # fractional value means an intensity image, not a segmentation.
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            value = float(a.flat[int(np.flatnonzero(bad)[0])])
            raise ImageError(
                f"{name}: non-integer pixel value {value:g} ({a.dtype}): grain labels must be integers "
                "(is this a micrograph rather than its segmentation?)"
            )
        return a.astype(np.int64)
    raise ImageError(f"{name}: {a.dtype} pixels: grain labels must be integers")


def grain_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """The labels with stray fragments merged, checked: at least two labels, and each one
    edge-connected region.

    Pixels touching only at a corner are not connected: a grain needs an area-bearing path
    to all its parts, else its polygon would be pinched to a point. Digitising a boundary
    leaves such fragments (a corner-connected pixel at the tip of a Voronoi cell): a part
    of a label other than its largest, of at most FRAGMENT_PIXELS, joins the label it
    borders most. A larger second part is an error.
    """
    from scipy import ndimage
    from skimage.measure import label as connected

    values = np.unique(labels)
    if len(values) < 2:
        raise ImageError(
            f"{name}: every pixel has the label {values[0]}: no grain boundaries "
            "(for a single crystal leave microstructure.image out and set microstructure.grains: 1)"
        )
    labels = labels.copy()
    index = np.searchsorted(values, labels)
    regions = connected(index + 1, background=0, connectivity=1)
    size = np.bincount(regions.ravel())
    _, first = np.unique(regions.ravel(), return_index=True)
    owner = np.r_[-1, index.ravel()[first]]  # region -> label index (regions are 1, 2, ...)
    largest = np.full(len(values), -1)
    for r in np.argsort(size[1:], kind="stable") + 1:  # ascending: the largest wins
        largest[owner[r]] = r
    split = set()
    for r in range(1, len(size)):
        if r == largest[owner[r]]:
            continue
        if size[r] > FRAGMENT_PIXELS:
            split.add(owner[r])
            continue
        mask = regions == r
        rim = ndimage.binary_dilation(mask) & ~mask  # the 4-neighbours around the fragment
        k = int(np.bincount(index[rim], minlength=len(values)).argmax())
        labels[mask], index[mask] = values[k], k
    if split:
        v = values[min(split)]
        n = int(np.sum(owner[1:] == min(split)))
        raise ImageError(
            f"{name}: label {v} forms {n} separate regions ({len(split)} label(s) do): each grain must be one "
            "edge-connected region with its own label (skimage.measure.label relabels regions; "
            "is this a segmented label image?)"
        )
    return labels


def label_digest(labels: np.ndarray) -> str:
    """sha256 of the shape and the labels: the mesh cache key of an image."""
    h = hashlib.sha256(repr(labels.shape).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()
