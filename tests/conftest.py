import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SKYPILE_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Models fetched from URLs (and local sha256 checks) are cached in a folder of this
    test session, not in the user's ~/.cache; child processes inherit the setting."""
    if "SKYPILE_MODEL_CACHE" in os.environ:
        yield Path(os.environ["SKYPILE_MODEL_CACHE"])
        return
    folder = tmp_path_factory.mktemp("model-cache")
    os.environ["SKYPILE_MODEL_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop("SKYPILE_MODEL_CACHE", None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real third-party data (``SKYPILE_DATA``, default ../shared/data)."""
    if not (DATA / "README.md").exists():
        pytest.skip(f"real data not found at {DATA} (set SKYPILE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def kenlm_bin() -> str:
    """KenLM's lmplz/build_binary, built by `make` (scripts/build_kenlm.sh)."""
    path = Path(os.environ.get("SKYPILE_KENLM_BIN", REPO / ".cache" / "kenlm" / "bin"))
    if not (path / "lmplz").exists():
        pytest.fail(f"KenLM tools missing in {path}: run scripts/build_kenlm.sh .cache/kenlm "
                    "(make test does it)")
    return str(path)


@pytest.fixture(scope="session")
def trained_models(data_dir, kenlm_bin, tmp_path_factory):
    """Every model of the default web config, trained by our own command from the data."""
    from skypile.classifiers.cli import train_all

    out = tmp_path_factory.mktemp("models")
    report = train_all(data_dir, out, kenlm_bin)
    return out, report
