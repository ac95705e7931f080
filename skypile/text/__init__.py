"""Text: structural extraction and its clean-up, heuristics, the maths of deduplication,
quality decisions and code filters. Pure functions over Documents; no Beam, no torch."""
