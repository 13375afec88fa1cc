"""The parts of benchmarks/bench.py: shared helpers (common), speed (fwd, train, enh), memory and
metric throughput (rss, metrics) and the reduced-precision measurements (bf16, bf16q)."""
