"""``skypile shards info|verify|megatron|mixture``: inspect and use token shards."""

from __future__ import annotations

import argparse
import sys

import yaml

from skypile import config as cfglib
from skypile.tokens import mixture
from skypile.tokens import shards


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="skypile shards",
                                 description="Inspect, verify, convert and mix token shards.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    i = sub.add_parser("info", help="per domain and split: documents, tokens, shards")
    i.add_argument("--shards", required=True, metavar="URL")
    v = sub.add_parser("verify", help="check every shard's header and sha256 against the manifest")
    v.add_argument("--shards", required=True, metavar="URL")
    m = sub.add_parser("megatron", help="write Megatron-LM's indexed dataset (.bin/.idx)")
    m.add_argument("--shards", required=True, metavar="URL")
    m.add_argument("--domain", required=True)
    m.add_argument("--split", default="train")
    m.add_argument("--output", required=True, metavar="PREFIX")
    x = sub.add_parser("mixture", help="plan a mixture with a repetition cap; writes a report")
    x.add_argument("--shards", required=True, metavar="URL")
    x.add_argument("--spec", required=True, metavar="FILE",
                   help="YAML: weights: {source: weight, ...}, max_repeat: 5")
    x.add_argument("--tokens", required=True, type=float, metavar="N", help="total tokens wanted")
    x.add_argument("--output", required=True, metavar="DIR")
    return ap


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        s = shards.ShardSet(args.shards)
        if args.cmd == "info":
            tok = s.manifest["tokenizer"]
            print(f"{args.shards}: tokenizer {tok['path']} (vocab {tok['vocab_size']}, "
                  f"sha256 {tok['sha256'][:12]}), dtype {s.manifest['dtype']}")
            for domain, splits in s.manifest["domains"].items():
                for split, d in splits.items():
                    print(f"  {domain:<14}{split:<11} docs={d['docs']:<9} tokens={d['tokens']:<11} "
                          f"shards={len(d['shards'])}")
        elif args.cmd == "verify":
            n = 0
            for domain in s.domains():
                for split in s.manifest["domains"][domain]:
                    for entry in s.entries(domain, split):
                        s.load(entry)
                        n += 1
            print(f"{n} shards verified")
        elif args.cmd == "megatron":
            if not s.entries(args.domain, args.split):
                raise shards.ShardError(f"no {args.split} shards for domain {args.domain!r} "
                                        f"(domains: {', '.join(s.domains())})")
            print("wrote", *shards.to_megatron(s, args.domain, args.split, args.output))
        else:
            spec = cfglib.from_dict(mixture.MixtureSpec,
                                    yaml.safe_load(open(args.spec, encoding="utf-8")) or {})
            available = {d: s.tokens(d) for d in s.domains()}
            rows = mixture.plan(available, spec, int(args.tokens))
            md, png = mixture.report(rows, args.output)
            print(open(md, encoding="utf-8").read())
            print(f"wrote {md} and {png}")
    except (shards.ShardError, mixture.MixtureError, cfglib.ConfigError, OSError) as e:
        print(f"skypile shards: error: {e}", file=sys.stderr)
        return 2
    return 0
