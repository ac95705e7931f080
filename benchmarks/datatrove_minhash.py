"""datatrove's half of benchmarks/dedup_vs_datatrove.py; runs in the datatrove venv.

    python benchmarks/datatrove_minhash.py --inputs DIR --out DIR --workers 2

datatrove's MinHash pipeline with its defaults (MinhashConfig(): 5-grams, 14 buckets of 8
hashes): JsonlReader -> signatures -> buckets -> clusters -> filter -> JsonlWriter, each
step a LocalPipelineExecutor with ``--workers`` workers (clustering is one task, as
datatrove requires). Kept documents land in OUT/final/*.jsonl.gz. ``minhash_steps`` is the
same chain for benchmarks/datatrove_side.py, after its filtering step.
"""

import sys
from pathlib import Path


def minhash_steps(inputs: str, out: Path, tasks: int, workers: int, logs: str, depends=None):
    """The last of datatrove's four MinHash executors over the JSONL in ``inputs`` (run it
    to run all four); kept documents go to ``out/final``."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig()
    sigs = LocalPipelineExecutor(
        [JsonlReader(inputs), MinhashDedupSignature(str(out / "sigs"), config=config)],
        tasks=tasks, workers=workers, logging_dir=logs + "/sigs", depends=depends)
    buckets = LocalPipelineExecutor(
        [MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)],
        tasks=config.num_buckets, workers=workers, logging_dir=logs + "/buckets", depends=sigs)
    cluster = LocalPipelineExecutor(
        [MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)],
        tasks=1, workers=1, logging_dir=logs + "/cluster", depends=buckets)
    return LocalPipelineExecutor(
        [JsonlReader(inputs), MinhashDedupFilter(str(out / "remove")),
         JsonlWriter(str(out / "final"))],
        tasks=tasks, workers=workers, logging_dir=logs + "/filter", depends=cluster)


def main() -> None:
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    inputs, out, workers = args["--inputs"], Path(args["--out"]), int(args.get("--workers", "2"))
    files = len(list(Path(inputs).iterdir()))
    minhash_steps(inputs, out, files, workers, str(out / "logs")).run()


if __name__ == "__main__":
    main()
