"""causalloc: causal tests of parameter localization in language-model unlearning.

Data flow (one direction): spec -> design -> testbed -> executor -> store -> run table
-> stats -> report. ``causalloc.stats`` and ``causalloc.report`` work on tables and never
import torch.
"""

__version__ = "0.1.0"
