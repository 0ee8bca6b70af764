"""The reconstruction grid a task draws (leaderboard.plots.plot_reconstructions) against the grid of one subplot per
tile it replaced, side by side.

    .venv/bin/python benchmarks/reconstruction_grid.py [--repeats 5]

Every task of a suite with images draws one grid (results/<suite>/pictures/<task>.png): 4 rows (true inputs,
inversions of the recovered and of the true updates, of round sums) of up to 8 users. Prints one Markdown row per
image shape: seconds per grid, drawn and written as PNG, by each.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from leaderboard.plots import _save_atomically, plot_reconstructions  # noqa: E402

SHAPES = ((1, 8, 8), (1, 28, 28), (3, 32, 32))  # digits, (Fashion-)MNIST, CIFAR-10


def subplot_per_tile(true, recovered, aggregate, path, ceiling, users: int = 8) -> Path:
    """The grid as drawn before: one axes per tile (the baseline)."""
    columns = min(users, len(true))
    rows = [("true input", true), ("from recovered update", recovered), ("from true update", ceiling),
            ("from a round's sum", aggregate)]
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns, 1.3 * len(rows)), squeeze=False)
    for row, (label, images) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(images):
                image = images[column].transpose(1, 2, 0)
                axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            if column == 0:
                axis.set_ylabel(label, fontsize=6)
    return _save_atomically(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="grids drawn per shape and method (default 5)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp())
    print("| image | subplot per tile (s) | one image (s) | speed-up |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        true, recovered, ceiling = (rng.random((12, *shape)) for _ in range(3))
        aggregate = rng.random((5, *shape))
        seconds = []
        for draw in (subplot_per_tile, plot_reconstructions):
            draw(true, recovered, aggregate, folder / "warm.png", ceiling)
            started = time.perf_counter()
            for k in range(args.repeats):
                draw(true, recovered, aggregate, folder / f"{k}.png", ceiling)
            seconds.append((time.perf_counter() - started) / args.repeats)
        print(f"| {'x'.join(map(str, shape))} | {seconds[0]:.3f} | {seconds[1]:.3f} | {seconds[0] / seconds[1]:.1f}x |")


if __name__ == "__main__":
    main()
