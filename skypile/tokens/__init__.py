"""Tokens: the SentencePiece tokenizer (training, extension, HF conversion), token shards,
domains, mixtures and the batch sampler that the trainer reads through."""
