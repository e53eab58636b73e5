"""Exceptions with messages that name the file, key or column at fault."""


class CausallocError(Exception):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""


class DataError(CausallocError, ValueError):
    """A data file or split is missing, malformed or empty."""


class MaskError(CausallocError, ValueError):
    """A mask or budget is impossible for the model it is applied to."""


class SpecError(CausallocError, ValueError):
    """An experiment or analysis spec has an unknown key, a wrong type or an impossible value.

    The message starts with the dotted key path, e.g. ``conditions[2].strategy``.
    """


class TableError(CausallocError, ValueError):
    """A run table lacks a column, has non-numeric metrics or unmatched blocks."""


class ConstraintError(CausallocError, RuntimeError):
    """A hard constraint was broken: a weight that must not move moved, or the weights a
    run loaded are not the theta_o recorded for the design."""
