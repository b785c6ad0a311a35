"""Write configs/examples/grains.png, the label image of configs/examples/from_image.yaml.

Six Voronoi grains in 1.2 um x 0.8 um, rasterised at 10 nm per pixel with their
boundaries bent by a smooth warp (so they are curves, as in a micrograph), and a small
grain enclosed by another. Labels 1-7 as 8-bit grey levels.

    bin/nzsp-env python3 configs/examples/make_grains.py
"""

from pathlib import Path

import numpy as np

from nzsp_fem.mesh.image import voronoi_labels, write_labels

SIZE = (1.2e-6, 0.8e-6)
PIXEL = 10e-9
# The first two are mirror images about y = 0.4 um, so a GB meets the electrode (x = 0) there.
SEEDS = np.array([[0.25, 0.2], [0.25, 0.6], [0.65, 0.3], [0.7, 0.68], [1.0, 0.2], [1.05, 0.55]]) * 1e-6
WARP = 30e-9
ISLAND = ((0.62e-6, 0.25e-6), 70e-9)  # centre, radius


def grains() -> np.ndarray:
    labels = voronoi_labels(SIZE, PIXEL, SEEDS, warp=WARP)
    (cx, cy), r = ISLAND
    x = (np.arange(labels.shape[1]) + 0.5) * PIXEL
    y = SIZE[1] - (np.arange(labels.shape[0]) + 0.5) * PIXEL
    inside = (x[None, :] - cx) ** 2 + (y[:, None] - cy) ** 2 < r * r
    labels[inside] = labels.max() + 1
    return labels


if __name__ == "__main__":
    path = Path(__file__).with_name("grains.png")
    write_labels(path, grains())
    print(f"wrote {path}")
