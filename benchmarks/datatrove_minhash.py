"""datatrove's half of benchmarks/dedup_vs_datatrove.py; runs in the datatrove venv.

    python benchmarks/datatrove_minhash.py --inputs DIR --out DIR --workers 2

datatrove's MinHash pipeline with its defaults (MinhashConfig(): 5-grams, 14 buckets of 8
hashes): JsonlReader -> signatures -> buckets -> clusters -> filter -> JsonlWriter, each
step a LocalPipelineExecutor with ``--workers`` workers (clustering is one task, as
datatrove requires). Kept documents land in OUT/final/*.jsonl.gz.
"""

import sys
from pathlib import Path


def main() -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    inputs, out, workers = args["--inputs"], Path(args["--out"]), int(args.get("--workers", "2"))
    files = len(list(Path(inputs).iterdir()))
    config, logs = MinhashConfig(), str(out / "logs")
    sigs = LocalPipelineExecutor(
        [JsonlReader(inputs), MinhashDedupSignature(str(out / "sigs"), config=config)],
        tasks=files, workers=workers, logging_dir=logs + "/1")
    buckets = LocalPipelineExecutor(
        [MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)],
        tasks=config.num_buckets, workers=workers, logging_dir=logs + "/2", depends=sigs)
    cluster = LocalPipelineExecutor(
        [MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)],
        tasks=1, workers=1, logging_dir=logs + "/3", depends=buckets)
    LocalPipelineExecutor(
        [JsonlReader(inputs), MinhashDedupFilter(str(out / "remove")), JsonlWriter(str(out / "final"))],
        tasks=files, workers=workers, logging_dir=logs + "/4", depends=cluster).run()


if __name__ == "__main__":
    main()
