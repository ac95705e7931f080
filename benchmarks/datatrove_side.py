"""datatrove's half of benchmarks/vs_datatrove.py; runs in a separate venv with datatrove.

    python benchmarks/datatrove_side.py full    --inputs DIR --out DIR --workers 2
    python benchmarks/datatrove_side.py extract --inputs DIR --out DIR

full: WarcReader -> Trafilatura -> LanguageFilter(en, zh) -> GopherQualityFilter (English
documents; datatrove's Gopher rules are English word rules) -> JsonlWriter, then MinHash
(signatures -> buckets -> clusters -> filter) -> JsonlWriter. extract: WarcReader ->
Trafilatura -> JsonlWriter (for the F1 comparison). Defaults are datatrove's own.
The lid.176 model must already sit in datatrove's asset cache (the caller puts it there).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datatrove_minhash import minhash_steps  # noqa: E402


def main() -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import GopherQualityFilter, LanguageFilter
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    mode = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    inputs, out, workers = args["--inputs"], Path(args["--out"]), int(args.get("--workers", "2"))
    files = sorted(p for p in Path(inputs).iterdir())
    logs = str(out / "logs")

    if mode == "extract":
        LocalPipelineExecutor([WarcReader(inputs, glob_pattern="*"), Trafilatura(),
                               JsonlWriter(str(out / "extracted"))],
                              tasks=len(files), workers=workers, logging_dir=logs + "/x").run()
        return

    class GopherEnglish(GopherQualityFilter):
        """Gopher's rules on English documents; other languages pass (no rules for them)."""

        name = "Gopher (English documents)"

        def filter(self, doc):
            if doc.metadata.get("language") != "en":
                return True
            return super().filter(doc)

    filtered = str(out / "filtered")
    first = LocalPipelineExecutor(
        [WarcReader(inputs, glob_pattern="*"), Trafilatura(), LanguageFilter(languages=["en", "zh"]),
         GopherEnglish(), JsonlWriter(filtered)],
        tasks=len(files), workers=workers, logging_dir=logs + "/1")
    minhash_steps(filtered, out, workers, workers, logs, depends=first).run()
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
