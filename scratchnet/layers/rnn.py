"""GRU, SimpleRNN and Bidirectional: Keras's layers on :func:`scratchnet.ops.gru` and :func:`scratchnet.ops.simple_rnn`."""
from __future__ import annotations

from .. import initializers, ops, regularizers
from ..backend import get_backend
from ..serialization import deserialize, initializer_config, register, serialize
from ._args import positive_int
from ..ops.masks import sequence_mask
from .base import Layer
from .recurrent import masked_outputs


class _Recurrent(Layer):
    """What GRU and SimpleRNN share: the weights, the initial state, ``go_backwards`` and the outputs."""

    #: Gate blocks in the kernels (GRU: 3, SimpleRNN: 1).
    gates = 1
    #: The op in ``scratchnet.ops``, looked up at each call (so that ``sn.exercises.use`` can swap it).
    op_name = None

    takes_mask = True
    supports_masking = True

    def __init__(self, units, return_sequences, return_state, go_backwards, kernel_initializer, recurrent_initializer,
                 bias_initializer, kernel_regularizer, recurrent_regularizer, bias_regularizer, activation,
                 name, dtype, zero_output_for_mask=False, **fixed):
        super().__init__(name, dtype)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        kind = type(self).__name__
        self.units = positive_int(kind, "units", units)
        for argument, (value, only) in {"activation": (activation, "tanh"), **fixed}.items():
            if value != only:
                raise ValueError(f"{kind}: {argument}={value!r} is not supported; scratchnet's {kind} has "
                                 f"{argument}={only!r} (Keras's default)")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def _bias_shape(self):
        return (self.gates * self.units,)

    def build(self, input_shape):
        kind = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(f"{kind} {self.name!r}: input must have rank 3 [N, T, D], got shape {input_shape}")
        width = self.gates * self.units
        self.kernel = self.add_weight("kernel", (input_shape[-1], width), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, width), self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer)
        self.bias = self.add_weight("bias", self._bias_shape(), self.bias_initializer, regularizer=self.bias_regularizer)

    def compute_mask(self, x, mask):
        """Keras's: the input's mask with ``return_sequences``, else None (and None for the state)."""
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        out = mask if self.return_sequences else None
        return [out, None] if self.return_state else out

    def call(self, x, training=False, initial_state=None, mask=None):
        h0 = None
        if initial_state is not None:
            state = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
            h0 = self._as_input(state)
        xs = x[:, ::-1] if self.go_backwards else x  # Keras: the sequence read from its end, outputs in that order
        masked = {}  # an op swapped in by sn.exercises.use may take no mask
        if mask is not None:
            mask = sequence_mask(f"{type(self).__name__} {self.name!r}", get_backend(), mask, *x.shape[:2])
            mask = mask[:, ::-1] if self.go_backwards else mask  # the mask is read from its end too
            masked["mask"] = mask
        op = getattr(ops, self.op_name)
        (ys, h), op_backprop = op(xs, self.kernel.value, self.recurrent_kernel.value, self.bias.value, h0, **masked)
        out, grads_of = masked_outputs(ys, h, mask, self.return_sequences, self.zero_output_for_mask)

        def backprop(dY):
            dout, dh = (dY[0], dY[1]) if self.return_state else (dY, None)
            dys, dh = grads_of(dout, dh)
            dxs, dkernel, drecurrent, dbias, dh0 = op_backprop(dys, dh)
            self.kernel.accumulate(dkernel, fresh=True)
            self.recurrent_kernel.accumulate(drecurrent, fresh=True)
            self.bias.accumulate(dbias, fresh=True)
            dx = dxs[:, ::-1] if self.go_backwards else dxs
            return [dx, dh0] if initial_state is not None else dx

        return ([out, h] if self.return_state else out), backprop

    def get_config(self):
        return {**super().get_config(), "units": self.units, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "go_backwards": self.go_backwards,
                "kernel_initializer": initializer_config(self.kernel_initializer),
                "recurrent_initializer": initializer_config(self.recurrent_initializer),
                "bias_initializer": initializer_config(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "zero_output_for_mask": self.zero_output_for_mask}


@register
class GRU(_Recurrent):
    """Gated recurrent unit over ``(N, T, D)`` sequences, Keras's ``GRU`` (``reset_after=True``, tanh, sigmoid gates).

    Parameters
    ----------
    units : int
        H, the state size.
    return_sequences : bool
        Output every step ``(N, T, H)`` instead of the last ``(N, H)``.
    return_state : bool
        Output ``[output, h]``; ``backprop`` then takes ``[doutput, dh]`` (``None``: zeros).
    go_backwards : bool
        Read the sequence from its last step; the outputs are in that (reversed) order, as Keras's.
    zero_output_for_mask : bool
        Keras's: with a mask, a masked step outputs zeros instead of the previous output.

    Masks (Keras's): ``forward(x, training, mask=m)``, ``m`` (N, T) boolean: a step where it is
    False keeps the state and outputs the previous output (:func:`scratchnet.ops.gru`); with
    ``go_backwards`` the mask is read from its end with the sequence. The output's mask is
    ``m`` with ``return_sequences``, else None.

    Weights, Keras's layout: ``kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H)
    (input and recurrent biases), gate blocks z, r, h. ``forward(x, training, initial_state=[h0])``
    starts from a given state; ``backprop`` then returns ``[dx, dh0]``. The equations and their
    backward: :mod:`scratchnet.ops.gru`.
    """

    gates = 3
    op_name = "gru"

    def __init__(self, units, return_sequences=False, return_state=False, go_backwards=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, activation="tanh",
                 recurrent_activation="sigmoid", reset_after=True, zero_output_for_mask=False, name=None, dtype=None):
        super().__init__(units, return_sequences, return_state, go_backwards, kernel_initializer,
                         recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
                         bias_regularizer, activation, name, dtype, zero_output_for_mask,
                         recurrent_activation=(recurrent_activation, "sigmoid"), reset_after=(reset_after, True))

    def _bias_shape(self):
        return (2, 3 * self.units)


@register
class SimpleRNN(_Recurrent):
    """``h_t = tanh(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``, Keras's ``SimpleRNN``.

    The same arguments, outputs and ``initial_state`` as :class:`GRU`; weights ``kernel`` (D, H),
    ``recurrent_kernel`` (H, H), ``bias`` (H,).
    """

    gates = 1
    op_name = "simple_rnn"

    def __init__(self, units, return_sequences=False, return_state=False, go_backwards=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, activation="tanh",
                 zero_output_for_mask=False, name=None, dtype=None):
        super().__init__(units, return_sequences, return_state, go_backwards, kernel_initializer,
                         recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
                         bias_regularizer, activation, name, dtype, zero_output_for_mask)


_MERGE_MODES = ("concat", "sum", "ave", "mul")


@register
class Bidirectional(Layer):
    """Run a recurrent layer forward and a copy of it backward over the sequence, and merge, as Keras's.

    Parameters
    ----------
    layer : GRU, SimpleRNN or LSTM
        The forward layer (its config makes the backward one, with ``go_backwards`` flipped).
    merge_mode : {"concat", "sum", "ave", "mul"}

    With ``return_sequences`` the backward layer's outputs are put back in
    time order before merging, so step ``t`` of the output holds both
    directions' state at ``t``. Weights: the forward layer's, then the
    backward one's (``forward_<name>/...``, ``backward_<name>/...``).
    ``return_state`` is not supported.

    Masks (Keras's): both layers get the mask (the backward one reversed with
    the sequence); with ``return_sequences`` both output zeros at masked
    steps (Keras sets ``zero_output_for_mask`` on them), and the output's mask is
    the input's (else None).
    """

    takes_mask = True
    supports_masking = True

    def __init__(self, layer, merge_mode="concat", name=None, dtype=None):
        from .recurrent import LSTM

        if isinstance(layer, dict):  # from a config
            layer = deserialize(layer)
        if not isinstance(layer, (GRU, SimpleRNN, LSTM)):
            raise ValueError(f"Bidirectional: layer must be a GRU, SimpleRNN or LSTM, got {type(layer).__name__}")
        if getattr(layer, "return_state", False) or getattr(layer, "stateful", False):
            raise ValueError("Bidirectional: a wrapped layer with return_state or stateful is not supported")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional: merge_mode must be one of {', '.join(map(repr, _MERGE_MODES))}, "
                             f"got {merge_mode!r}")
        super().__init__(name or f"bidirectional_{layer.name}", dtype if dtype is not None else
                         (layer.dtype.name if layer._dtype_explicit else None))
        self.merge_mode = merge_mode
        config = layer.get_config()
        self._layer_config = serialize(layer)
        self.forward_layer = self._add_part(type(layer).from_config({**config, "name": f"forward_{layer.name}"}))
        backward = {**config, "name": f"backward_{layer.name}", "go_backwards": not config["go_backwards"]}
        self.backward_layer = self._add_part(type(layer).from_config(backward))
        for part in (self.forward_layer, self.backward_layer):  # Keras's force_zero_output_for_mask
            part.zero_output_for_mask = part.return_sequences

    def compute_mask(self, x, mask):
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        return mask if self.forward_layer.return_sequences else None

    def call(self, x, training=False, mask=None):
        sequences = self.forward_layer.return_sequences
        masks = ({}, {})
        if mask is not None:
            mask = sequence_mask(f"Bidirectional {self.name!r}", get_backend(), mask, *x.shape[:2])
            masks = ({"mask": mask}, {"mask": mask})  # the backward layer reads it from the end (go_backwards)
        yf, forward_backprop = self.forward_layer.forward(x, training, **masks[0])
        yb, backward_backprop = self.backward_layer.forward(x, training, **masks[1])
        if sequences:
            yb = yb[:, ::-1]  # back in time order
        xp = get_backend().xp
        if self.merge_mode == "concat":
            y = xp.concatenate([yf, yb], axis=-1)
        elif self.merge_mode == "sum":
            y = yf + yb
        elif self.merge_mode == "ave":
            y = (yf + yb) / 2
        else:
            y = yf * yb
        H = yf.shape[-1]

        def backprop(dy):
            if self.merge_mode == "concat":
                dyf, dyb = dy[..., :H], dy[..., H:]
            elif self.merge_mode == "sum":
                dyf, dyb = dy, dy
            elif self.merge_mode == "ave":
                dyf = dyb = dy / 2
            else:
                dyf, dyb = dy * yb, dy * yf
            if sequences:
                dyb = dyb[:, ::-1]
            dxf = forward_backprop(xp.ascontiguousarray(dyf))
            dxb = backward_backprop(xp.ascontiguousarray(dyb))
            return dxf + dxb

        return y, backprop

    def get_config(self):
        return {**super().get_config(), "layer": self._layer_config, "merge_mode": self.merge_mode}
