"""The Keras convention shared by losses, regularizers, initializers and optimizers."""
from __future__ import annotations


class Configurable:
    """``get_config()`` returns the constructor's arguments; ``repr`` shows them."""

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
