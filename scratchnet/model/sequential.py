"""``Sequential``: a stack of layers, each feeding the next."""
from __future__ import annotations

from ..layers.base import Layer
from ..serialization import deserialize, register, serialize
from .base import Model


@register
class Sequential(Model):
    """A stack of layers, each feeding the next.

    Parameters
    ----------
    layers : list of Layer
        A layer object may appear more than once (its weights are shared and
        receive the sum of the gradients).
    name : str, optional
    dtype : {"float32", "float64"}, optional
        The dtype of every layer created without one (see :class:`Model`).
    """

    def __init__(self, layers=None, name=None, dtype=None):
        super().__init__(name, dtype)
        self._stack = []
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise ValueError(f"{self.name}: Sequential takes layers, got {type(layer).__name__}")
        # The same object again is a second use of the same weights.
        self._track(layer)
        self._stack.append(layer)

    @property
    def layers(self):
        return list(self._stack)

    takes_need_dx = True
    takes_mask = True
    #: The mask of the last forward's output (Keras's ``_keras_mask``), None when it has none:
    #: the training and test steps hand it to the loss and the metrics.
    output_mask = None

    def compute_mask(self, x, mask):
        """The mask its last forward's output had (a nested Sequential passes it on to the layers after it)."""
        return self.output_mask

    def call(self, x, training=False, need_dx=True, mask=None):
        """Run the stack; ``backprop(dy)`` runs the layers' backprops in reverse and returns ``dx``.

        With ``need_dx=False`` a layer is told to skip its ``dx`` as long as no
        layer before it has trainable weights (their gradients need it), and
        the layers before the first trainable one are not backpropagated at
        all; ``backprop`` then returns ``None``.

        Masks, as Keras's: each layer that :attr:`~scratchnet.Layer.takes_mask` gets the mask of its
        input (when there is one), and ``mask = layer.compute_mask(x, mask)`` gives the next one's;
        the last is kept as :attr:`output_mask`.
        """
        if not self._stack:
            raise ValueError(f"{self.name}: the model has no layers")
        backprops = []  # (backprop, whether the layer's input needs its gradient, whether the layer trains)
        stack, i = self._stack, 0
        while i < len(stack):
            # A layer may run fused with the one before it (Layer.forward_after): the pair is one step here.
            # A mask reaching the pair would be the first layer's to drop or pass on: fuse only without one.
            fused = (stack[i + 1].forward_after(stack[i], x, training)
                     if i + 1 < len(stack) and mask is None else None)
            x_in = x
            if fused is not None:
                (x, backprop), group = fused, stack[i : i + 2]
            else:
                masked = {"mask": mask} if mask is not None and stack[i].takes_mask else {}
                (x, backprop), group = stack[i].forward(x, training, need_dx=need_dx, **masked), stack[i : i + 1]
            for layer in group:
                mask = layer.compute_mask(x_in, mask)  # (the second of a fused pair ignores its input)
            i += len(group)
            trains = any(p.trainable for layer in group for p in layer.parameters())
            backprops.append((backprop, need_dx, trains))
            need_dx = need_dx or trains

        self.output_mask = mask

        def backprop(dy):
            for bp, wants_dx, trains in reversed(backprops):
                if not (wants_dx or trains):
                    return None  # this layer and all before it: no weights to train, no dx wanted
                dy = bp(dy)
            return dy

        return x, backprop

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "layers": [serialize(layer) for layer in self._stack]}

    @classmethod
    def from_config(cls, config):
        return cls([deserialize(c) for c in config["layers"]], name=config.get("name"), dtype=config.get("dtype"))
