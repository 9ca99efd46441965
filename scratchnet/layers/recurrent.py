"""LSTM over ``(N, T, D)`` sequences, Keras's ``LSTM``."""
from __future__ import annotations

import numpy

from .. import initializers, ops, recording, regularizers
from ..backend import get_backend
from ..ops.masks import sequence_mask
from ..serialization import initializer_config, register
from ._args import positive_int
from .base import Layer, as_backend_array
from .embedding import Embedding


@register
class LSTM(Layer):
    """Long short-term memory over ``(N, T, D)`` sequences, Keras's ``LSTM`` (tanh, sigmoid gates).

    Parameters
    ----------
    units : int
        H, the state size.
    return_sequences : bool
        Output every step ``(N, T, H)`` instead of the last ``(N, H)``.
    return_state : bool
        Output ``[output, h, c]``; ``backprop`` then takes ``[doutput, dh, dc]``
        (``None`` entries are zeros).
    stateful : bool
        Start each batch from the final state of the previous one (batches
        must keep their size); :meth:`reset_states` starts again from zeros.
        Gradients stop at the batch boundary (truncated BPTT).
    unit_forget_bias : bool
        Initialise the forget gate's bias to 1 (Keras's default).
    zero_output_for_mask : bool
        Keras's: with a mask, a masked step outputs zeros instead of the previous
        output (``Bidirectional`` sets it when returning sequences).
    go_backwards : bool
        Read the sequence (and its mask) from its last step; the outputs are in
        that (reversed) order, as Keras's. ``Bidirectional``'s backward layer.

    Masks (Keras's): ``forward(x, training, mask=m)``, ``m`` (N, T) boolean
    (from ``Embedding(mask_zero=True)`` or ``Masking`` in a model): a step where
    it is False keeps the state and outputs the previous output
    (:func:`scratchnet.ops.lstm`). The output's mask is ``m`` with
    ``return_sequences``, else None.

    ``forward(x, training, initial_state=[h0, c0])`` starts from a given state;
    ``backprop`` then returns ``[dx, dh0, dc0]``.
    """

    def __init__(self, units, return_sequences=False, return_state=False, stateful=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 zero_output_for_mask=False, go_backwards=False, name=None, dtype=None):
        super().__init__(name, dtype)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.go_backwards = bool(go_backwards)
        self.units = positive_int("LSTM", "units", units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.states = None

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"LSTM {self.name!r}: input must have rank 3 [N, T, D], got shape {input_shape}")
        H = self.units
        self.kernel = self.add_weight("kernel", (input_shape[-1], 4 * H), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (H, 4 * H), self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer)
        self.bias = self.add_weight("bias", (4 * H,), self._bias_init, regularizer=self.bias_regularizer)

    def _bias_init(self, shape, dtype):
        b = numpy.asarray(self.bias_initializer(shape, dtype))
        if self.unit_forget_bias:
            b = b.copy()
            b[self.units : 2 * self.units] = 1  # gates are i, f, c, o
        return b

    def reset_states(self):
        self.states = None

    takes_need_dx = True
    takes_mask = True
    supports_masking = True

    def compute_mask(self, x, mask):
        """Keras's: the input's mask with ``return_sequences``, else None (and None for the states)."""
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        out = mask if self.return_sequences else None
        return [out, None, None] if self.return_state else out

    def call(self, x, training=False, initial_state=None, need_dx=True, mask=None):
        h0, c0 = self._initial_state(x.shape[0], initial_state, f"x has {x.shape[0]} (x: {tuple(x.shape)})")
        mask = None if mask is None else sequence_mask(f"LSTM {self.name!r}", get_backend(), mask, *x.shape[:2])
        if self.go_backwards:  # Keras: the sequence and its mask read from the end, the outputs in that order
            x = x[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        masked = {} if mask is None else {"mask": mask}  # an op swapped in by sn.exercises.use may take no mask
        outputs, lstm_backprop = ops.lstm(x, self.kernel.value, self.recurrent_kernel.value, self.bias.value, h0, c0,
                                          need_dx=need_dx, **masked)
        y, backprop = self._finish(outputs, lstm_backprop, state_grads=initial_state is not None, mask=mask)
        if not self.go_backwards:
            return y, backprop

        def backprop_in_time_order(dY):
            grads = backprop(dY)
            dx, rest = (grads[0], grads[1:]) if isinstance(grads, list) else (grads, None)
            dx = None if dx is None else dx[:, ::-1]
            return dx if rest is None else [dx, *rest]

        return y, backprop_in_time_order

    def forward_after(self, previous, x, training=False):
        """An :class:`Embedding` then this LSTM as one op, :func:`scratchnet.ops.embedding_lstm`.

        The table is projected through the kernel once instead of every
        position's row (the op's docstring derives it), which pays when the
        table has fewer rows than a batch has positions (a character model).
        ``None`` otherwise: before both layers are built, when the two keep
        different dtypes, or when either is a subclass with a ``call`` or
        ``forward`` of its own (the fused op would skip it). With
        ``mask_zero`` the fused op takes the mask ``ids != 0``.

        What runs is the fused op, and tools that watch the ops see it: the
        profiler times ``embedding_lstm`` under this layer, and a TensorBoard
        graph shows it in this layer's scope, with no ``embedding`` scope of
        its own (and no histogram of the embedding's output).
        """
        if not (_plain(previous, Embedding) and _plain(self, LSTM) and previous.built and self.built) \
                or self.go_backwards:
            return None
        table = previous.embeddings.value
        shape = numpy.shape(x)  # decided on the shape first: no conversion when the pair does not fuse
        if len(shape) != 2 or table.shape[0] >= shape[0] * shape[1] or table.dtype != self.kernel.value.dtype:
            return None
        ids = previous.ids_of(as_backend_array(x, previous.dtype))
        with recording.scope(self.name, self):
            h0, c0 = self._initial_state(ids.shape[0], None, f"the ids have {ids.shape[0]} (ids: {tuple(ids.shape)})")
            mask = previous.compute_mask(ids)
            masked = {} if mask is None else {"mask": mask}
            outputs, op_backprop = ops.embedding_lstm(ids, table, self.kernel.value, self.recurrent_kernel.value,
                                                      self.bias.value, h0, c0,
                                                      need_dtable=previous.embeddings.trainable, **masked)

        def lstm_backprop(dys, dh, dc):
            dtable, *rest = op_backprop(dys, dh, dc)
            if dtable is not None:
                previous.embeddings.accumulate(dtable, fresh=True)
            return (None, *rest)

        return self._finish(outputs, lstm_backprop, state_grads=False, mask=mask)

    def _initial_state(self, N, initial_state, what):
        """``(h0, c0)``: the given state, the carried one of a stateful layer, or ``(None, None)`` (zeros)."""
        if initial_state is not None:
            return tuple(as_backend_array(s, self.dtype) for s in initial_state)
        if self.stateful and self.states is not None:
            h0, c0 = self.states
            if h0.shape[0] != N:
                raise ValueError(
                    f"LSTM {self.name!r}: a stateful layer needs a fixed batch size; the state has {h0.shape[0]} "
                    f"rows but {what}; call reset_states() to start over"
                )
            return h0, c0
        return None, None

    def _finish(self, outputs, op_backprop, state_grads, mask=None):
        """The layer's output and ``backprop`` around an op's: carry the state, route ``dY`` to the op's
        ``(dys, dh, dc)`` and hold the weight gradients; ``backprop`` returns ``dX``, or
        ``[dX, dh0, dc0]`` with ``state_grads`` (the caller gave an initial state)."""
        ys, h, c = outputs
        if self.stateful:
            self.states = (h, c)
        out, grads_of = masked_outputs(ys, h, mask, self.return_sequences, self.zero_output_for_mask)

        def backprop(dY):
            dout, dh, dc = dY if self.return_state else (dY, None, None)
            dys, dh = grads_of(dout, dh)
            dX, dK, dR, db, dh0, dc0 = op_backprop(dys, dh, dc)
            self.kernel.accumulate(dK, fresh=True)  # the op's new arrays: held without a copy
            self.recurrent_kernel.accumulate(dR, fresh=True)
            self.bias.accumulate(db, fresh=True)
            return [dX, dh0, dc0] if state_grads else dX

        return ([out, h, c] if self.return_state else out), backprop

    def get_config(self):
        return {**super().get_config(), "units": self.units, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "stateful": self.stateful,
                "kernel_initializer": initializer_config(self.kernel_initializer),
                "recurrent_initializer": initializer_config(self.recurrent_initializer),
                "bias_initializer": initializer_config(self.bias_initializer), "unit_forget_bias": self.unit_forget_bias,
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "zero_output_for_mask": self.zero_output_for_mask, "go_backwards": self.go_backwards}


def masked_outputs(ys, h, mask, return_sequences, zero_output_for_mask):
    """``(out, grads_of)``: a recurrent layer's output from its op's ``ys`` (Keras's outputs, masked steps
    included) and final state ``h``, and ``grads_of(dout, dh) -> (dys, dh)``, the output's gradient handed
    back to the op: as ``dys`` for a sequence, else joined to the final state's ``dh`` (the last output is
    ``h`` itself; ``None`` is no gradient). Without a mask the last output is ``h``; with one it is Keras's
    last output, ``h`` where the sequence has an unmasked step and 0 where it has none.
    ``zero_output_for_mask`` zeroes the masked steps' outputs (Keras's, set by ``Bidirectional``)."""
    xp = get_backend().xp
    keep = None if mask is None or not (return_sequences and zero_output_for_mask) else mask[..., None]
    any_step = None if mask is None or return_sequences else mask.any(axis=1)[:, None]

    def grads_of(dout, dh):
        if return_sequences:
            return (dout if keep is None or dout is None else xp.where(keep, dout, 0)), dh
        if dout is not None:
            dout = dout if any_step is None else xp.where(any_step, dout, 0)
            dh = dout if dh is None else dh + dout
        return None, dh

    if return_sequences:
        return (ys if keep is None else xp.where(keep, ys, 0)), grads_of
    return (h if any_step is None else xp.where(any_step, h, 0)), grads_of


def _plain(layer, cls):
    """Whether ``layer`` runs ``cls``'s own ``call`` and ``forward`` (a subclass may change what they compute)."""
    return isinstance(layer, cls) and type(layer).call is cls.call and type(layer).forward is cls.forward
