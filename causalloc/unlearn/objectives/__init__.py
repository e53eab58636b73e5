"""Built-in unlearning objectives; importing this package registers each of them.

``ga``, ``graddiff``, ``wga``, ``npo``, ``dpo``, ``rmu``: one module per objective, each a
dataclass of documented hyperparameters (see ``causalloc.unlearn.base.make_objective``).
"""

from causalloc.unlearn.objectives import dpo, ga, graddiff, npo, rmu, wga

__all__ = ["dpo", "ga", "graddiff", "npo", "rmu", "wga"]
