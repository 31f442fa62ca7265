"""Pruning: make a torch model do less work before export, and say exactly what was removed.

Structured pruning removes whole conv channels (CNNs, through Torch-Pruning's dependency graph) or whole FFN
neurons, and attention heads or whole encoder layers when asked (BERT-family and ``torch.nn`` transformer
encoders; the hidden size stays), so the dense compute really shrinks. Unstructured and 2:4 sparsity only zero
weights: smaller compressed files and input for sparse kernels, no speed-up on dense CPU runtimes; the report
says so.

Modules: ``options`` (PruneOptions, PruneResult: at the bottom, imported by all), ``module`` (prune_module),
``channels`` (CNN), ``transformer`` (heads/FFN), ``layers`` (whole encoder layers, dropped by measured effect),
``activation`` (data-aware importance for heads/FFN),
``sparse`` (zeros), ``common`` (importance, counting, naming a failing layer), ``macs`` (MAC counters for
attention), ``latency`` (``prune_until``, ``parse_budget``), ``timing`` (how a step is exported, quantized and
timed).
"""

from edgekit.converters.prune.latency import Budget, parse_budget, prune_until
from edgekit.converters.prune.module import prune_module
from edgekit.converters.prune.options import IMPORTANCES, KINDS, PruneOptions, PruneResult, check_ratio

__all__ = ["IMPORTANCES", "KINDS", "Budget", "PruneOptions", "PruneResult", "check_ratio", "parse_budget",
           "prune_module", "prune_until"]  # fmt: skip
