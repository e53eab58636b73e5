"""Run tables from other frameworks' outputs (``causalloc import``): one small module per
framework (open_unlearning, muse, lm_eval, rwku) on the shared machinery of ``common``
(condition/block rules, metric facts, writing the table and its analysis spec)."""
