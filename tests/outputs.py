"""Reading a pipeline's output in tests: the rows of ``OUTPUT/<kind>/*.jsonl.gz``."""

import gzip
import json
from pathlib import Path


def read_jsonl_gz(folder: Path) -> list[dict]:
    """Every row of the gzip JSONL files in ``folder``, file by file in name order."""
    rows = []
    for f in sorted(Path(folder).glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh]
    return rows
