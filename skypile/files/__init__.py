"""Input and output: readers for WARC/WET, gzip members and rows (JSONL, Parquet, text),
archives of source code, HTTP payload decoding, and the output contract on any fsspec URL."""
