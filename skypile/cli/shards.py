"""``skypile shards info|verify|megatron|mixture``: inspect and use token shards.

One config type per command; its fields are the command's flags.
"""

from __future__ import annotations

import dataclasses

from skypile import config as cfglib
from skypile.cli import subcommands
from skypile.cli.subcommands import arg
from skypile.tokens import mixture
from skypile.tokens import shards

PROG = "skypile shards"


@dataclasses.dataclass(kw_only=True)
class _OnShards:
    shards: str = arg(metavar="URL")
    """the shard folder skypile tokenize wrote (its manifest.json), local or fsspec URL"""


@dataclasses.dataclass(kw_only=True)
class ShardsInfoCommand(_OnShards):
    """per domain and split: documents, tokens, shards"""


@dataclasses.dataclass(kw_only=True)
class ShardsVerifyCommand(_OnShards):
    """check every shard's header and sha256 against the manifest"""


@dataclasses.dataclass(kw_only=True)
class MegatronCommand(_OnShards):
    """write Megatron-LM's indexed dataset (.bin/.idx)"""

    domain: str
    """the domain to convert (see skypile shards info)"""
    split: str = "train"
    """train or validation"""
    output: str = arg(metavar="PREFIX")
    """writes PREFIX.bin and PREFIX.idx (PREFIX's folder is made when missing)"""


@dataclasses.dataclass(kw_only=True)
class MixtureCommand(_OnShards):
    """plan a mixture with a repetition cap; writes a report"""

    spec: str = arg(metavar="FILE")
    """YAML: weights: {source: weight, ...}, max_repeat: 5"""
    tokens: float = arg(metavar="N")
    """total tokens wanted"""
    output: str = arg(metavar="DIR")
    """folder for composition.md and its chart"""


def info(cfg: ShardsInfoCommand) -> None:
    s = shards.ShardSet(cfg.shards)
    tok = s.manifest["tokenizer"]
    print(f"{cfg.shards}: tokenizer {tok['path']} (vocab {tok['vocab_size']}, "
          f"sha256 {tok['sha256'][:12]}), dtype {s.manifest['dtype']}")
    for domain, splits in s.manifest["domains"].items():
        for split, d in splits.items():
            print(f"  {domain:<14}{split:<11} docs={d['docs']:<9} tokens={d['tokens']:<11} "
                  f"shards={len(d['shards'])}")


def verify(cfg: ShardsVerifyCommand) -> None:
    s = shards.ShardSet(cfg.shards)
    n = 0
    for domain in s.domains():
        for split in s.manifest["domains"][domain]:
            for entry in s.entries(domain, split):
                s.load(entry)
                n += 1
    print(f"{n} shards verified")


def megatron(cfg: MegatronCommand) -> None:
    s = shards.ShardSet(cfg.shards)
    if not s.entries(cfg.domain, cfg.split):
        raise shards.ShardError(f"no {cfg.split} shards for domain {cfg.domain!r} "
                                f"(domains: {', '.join(s.domains())})")
    print("wrote", *shards.to_megatron(s, cfg.domain, cfg.split, cfg.output))


def plan_mixture(cfg: MixtureCommand) -> None:
    s = shards.ShardSet(cfg.shards)
    spec = cfglib.load(mixture.MixtureSpec, cfg.spec)
    available = {d: s.tokens(d) for d in s.domains()}
    rows = mixture.plan(available, spec, int(cfg.tokens))
    md, png = mixture.report(rows, cfg.output)
    print(open(md, encoding="utf-8").read())
    print(f"wrote {md} and {png}")


COMMANDS: subcommands.Commands = {
    "info": (ShardsInfoCommand, info),
    "verify": (ShardsVerifyCommand, verify),
    "megatron": (MegatronCommand, megatron),
    "mixture": (MixtureCommand, plan_mixture),
}


def run(argv: list[str] | None = None) -> int:
    return subcommands.run(PROG, "Inspect, verify, convert and mix token shards.", COMMANDS,
                           argv, (shards.ShardError, mixture.MixtureError, OSError))
