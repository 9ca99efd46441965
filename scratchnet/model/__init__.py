"""``Model`` and ``Sequential``: layers made of layers, with Keras's training API (see :mod:`.base`)."""
from __future__ import annotations

from .base import Model
from .functional import Functional, Input
from .sequential import Sequential

__all__ = ["Functional", "Input", "Model", "Sequential"]
