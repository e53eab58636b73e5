"""Run tables from other frameworks' outputs (``causalloc import``)."""
