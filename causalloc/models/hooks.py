"""Forward hooks attached together and removed together, on every way out.

``with Hooks() as hooks: hooks.forward(module, fn); ...`` removes every hook it attached when
the block ends, also on an exception (and a hook attached before a failing registration is
removed too). An object that keeps hooks for its own lifetime (the trainer's
:class:`~causalloc.unlearn.trainer.MaskedColumns`) holds a ``Hooks`` and calls
:meth:`Hooks.remove` when it is done. Written here because torch has no hook group:
``register_forward_hook`` returns one handle per hook.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.utils.hooks import RemovableHandle


class Hooks:
    """A group of forward (pre-)hooks; :meth:`remove` (or leaving the ``with`` block)
    removes them all, in reverse order of attachment."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def forward(self, module: nn.Module, hook: Callable) -> Hooks:
        """Attach ``hook(module, args, output)`` (``module.register_forward_hook``)."""
        self._handles.append(module.register_forward_hook(hook))
        return self

    def pre(self, module: nn.Module, hook: Callable) -> Hooks:
        """Attach ``hook(module, args)`` (``module.register_forward_pre_hook``)."""
        self._handles.append(module.register_forward_pre_hook(hook))
        return self

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        """Remove every attached hook (a second call does nothing)."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> Hooks:  # noqa: PYI034 (a plain class, not subclassed)
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
