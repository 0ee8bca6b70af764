"""The results store: one JSON file per task (the resume cache) and the tidy table built from them."""

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from benchmark.columns import RESULT_COLUMNS, SCORE_COLUMNS


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


class ResultStore:
    """Results of one suite under `root/<suite>/`: `tasks/<key>.json`, `pictures/<key>.png`, `results.parquet` / `results.csv`."""

    def __init__(self, root: str | os.PathLike, suite: str) -> None:
        self.folder = Path(root) / suite
        self.tasks = self.folder / "tasks"

    def picture(self, key: str) -> Path:
        """Where a task's reconstruction grid goes: beside the results, named by the task key."""
        return self.folder / "pictures" / f"{key}.png"

    def has(self, key: str) -> bool:
        return (self.tasks / f"{key}.json").is_file()

    def save(self, key: str, row: dict) -> None:
        text = json.dumps({k: _json_safe(v) for k, v in row.items()}, sort_keys=True)
        write_atomically(self.tasks / f"{key}.json", text.encode())

    def load(self, key: str) -> dict:
        row = json.loads((self.tasks / f"{key}.json").read_text())
        return {k: (float(v) if v in ("inf", "-inf") else (math.nan if v is None else v)) for k, v in row.items()}

    def table(self, keys: list[str]) -> "pd.DataFrame":
        import pandas as pd  # here: commands that only write files (disaggregate) should not load pandas

        rows = [self.load(key) for key in keys if self.has(key)]
        frame = pd.DataFrame(rows).reindex(columns=[*RESULT_COLUMNS, *sorted({k for r in rows for k in r} - set(RESULT_COLUMNS))])
        return frame.astype({c: "float64" for c in SCORE_COLUMNS})

    def write_table(self, frame: "pd.DataFrame") -> tuple[Path, Path]:
        parquet, csv = self.folder / "results.parquet", self.folder / "results.csv"
        write_atomically(parquet, frame.to_parquet(index=False))
        write_atomically(csv, frame.to_csv(index=False).encode())
        return parquet, csv
