import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SKYPILE_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real third-party data (``SKYPILE_DATA``, default ../shared/data)."""
    if not (DATA / "README.md").exists():
        pytest.skip(f"real data not found at {DATA} (set SKYPILE_DATA)")
    return DATA
