"""``skypile inspect``: a static, self-contained HTML report of what a run kept and dropped.

  sampling   bounded one-pass summaries (bottom-k samples, heavy hitters, histograms)
  collect    one output folder streamed once into a Step (funnel, samples, scores, clusters)
  raw        the raw page of a sampled record, read back from its WARC by offset
  sections   a step's tab: funnel, reject samples, kept sample, histograms, blocks, clusters
  shardview  a shard set: tokens per domain and split, lengths, mixtures, data card
  charts, markdown, assets   SVG/CSS charts, our Markdown as HTML, inline style and script
  page       discovery of the steps, the size budget, index.html
"""
