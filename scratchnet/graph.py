"""The model graph of TensorBoard's GRAPHS tab, traced from a forward pass.

:class:`GraphTracer` is a recorder (:mod:`scratchnet.recording`): while it is
active, every op call becomes a node of a TensorFlow ``GraphDef``. Nothing is
written per model; a user's own :class:`scratchnet.Layer` appears like a
built-in one, because its ops report themselves. The rules:

- **Ops.** One node per op call (``conv2d``, ``relu``, ``lstm``, ...), named
  by the scopes around it joined by ``/``: the run (``Train``), the outermost
  layer's weight prefix (``charlm``; nothing for a model outside any
  ``store.scope``) and the layers inside it (``layer1-conv1/conv2d``). Each
  layer is then a name scope that TensorBoard collapses and expands. A second
  call in the same scope is ``conv2d_1``, as in TensorFlow. Attributes: ``T``
  and ``_output_shapes`` (shown on hover), the op's non-array arguments
  (``padding``, ``strides``, ``rate``) and, for ``lstm``, ``time_steps`` and
  ``units``: an LSTM is one node for all its steps.
- **Edges** run from the op (or parameter, or input) that holds an input
  array. An array is matched by identity first (``id()``, with a reference
  kept so that no id is reused during the trace), then by the memory it views:
  ``x.reshape(...)`` in a layer, or a whole ``Reshape``/``Flatten`` layer,
  which runs no op, reads the memory of an earlier output, so edges pass
  through such layers to the op that wrote the memory (the latest one).
- **Parameters.** One ``VariableV2`` node per :class:`~scratchnet.Parameter`,
  named by its store name (``layer1-conv1/kernel``). In a graph of several
  runs, a parameter read by two runs (shared with ``store.scope(...,
  reuse=True)``) is one node outside them, with edges into both, as
  TensorFlow draws a shared ``get_variable``; one read by a single run lives
  inside that run (``Test/model/lstm/kernel``), so two models that do not
  share show two sets.
- **Arrays no op wrote.** A layer that finishes its output with plain array
  arithmetic (``x * g``) hands the next layer an array no op wrote: when the
  next layer's first op reads such an array and it has the shape and dtype of
  the previous layer's last op output, the edge runs from that op. Any other
  array that no traced op wrote and no parameter holds is a ``Placeholder``:
  the first one of a run is ``input`` (the model's input), the others are
  named by the argument that reads them, in that op's scope (an LSTM's
  carried state ``lstm/h0``; the loss's ``labels``).

Ops inside a :func:`scratchnet.recording.region` (the optimizer, the moving
average) are not part of the model and are left out; backward calls too.
The tracer also keeps, for each layer below the outermost one, the output of
its last op (:attr:`GraphTracer.activations`), for activation histograms.
"""
from __future__ import annotations

import contextlib

import numpy

from . import recording

#: TensorFlow's DataType numbers (types.proto) by NumPy dtype name.
DATA_TYPES = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "int64": 9, "bool": 10,
              "uint16": 17, "float16": 19, "uint32": 22, "uint64": 23}

#: Attributes an op's inputs give beyond its non-array arguments: the LSTM's step count.
OP_ATTRS = {
    "lstm": lambda inputs: {"time_steps": int(inputs["x"].shape[1]), "units": int(inputs["recurrent_kernel"].shape[0])},
    "embedding_lstm": lambda inputs: {"time_steps": int(inputs["ids"].shape[1]),
                                      "units": int(inputs["recurrent_kernel"].shape[0])},
}


def _is_array(a):
    return hasattr(a, "shape") and hasattr(a, "dtype")


def _owner(a):
    """The array whose memory ``a`` views (``a`` itself when it owns its memory)."""
    while getattr(a, "base", None) is not None and _is_array(a.base):
        a = a.base
    return a


class _Node:
    def __init__(self, name, op, inputs, attrs, outputs=()):
        self.name, self.op, self.inputs, self.attrs = name, op, inputs, attrs
        self.outputs = [(tuple(int(s) for s in numpy.shape(a)), _dtype_name(a)) for a in outputs]


def _dtype_name(a):
    return numpy.dtype(getattr(a, "dtype", numpy.float64)).name


class GraphTracer:
    """A recorder that turns the op calls of forward passes into one ``GraphDef``.

    Usage::

        tracer = GraphTracer()
        with tracer.trace("Train", [train_model], inputs={"input": x}):
            train_model.forward(x, training=True)
        with tracer.trace("Test", [test_model], inputs={"input": x_test}):
            test_model.forward(x_test)
        graph_def = tracer.graph_def()      # a tensorboardX GraphDef proto
    """

    def __init__(self):
        self._nodes = {}          # name -> _Node, in creation order
        self._taken = set()       # node names and every scope path above one
        self._runs_of = {}        # id(parameter) -> (parameter, set of runs)
        self._keep = []           # the traced arrays: their ids stay unique while the tracer lives
        self.activations = {}
        self._begin_run("", ())

    def _begin_run(self, run, layers):
        self.run, self._layers = run, list(layers)
        self._by_id, self._by_owner = {}, {}
        self._params, self._param_owners = {}, {}
        self._scopes, self._regions, self._inputs = [], 0, 0
        self._last = {}           # scope path -> (source, array) of the last op output inside it
        self._ended = None        # (parent path, (source, array)) of the scope that ended last
        self._scan_parameters()

    def _scan_parameters(self):
        for layer in self._layers:
            for p in layer.parameters():
                self._params[id(p.value)] = p
                self._param_owners[id(_owner(p.value))] = p
                self._keep.append(p.value)

    @contextlib.contextmanager
    def trace(self, run="", layers=(), inputs=None):
        """Record the op calls of the block as run ``run`` (``""``: no run scope) of the graph.

        ``layers``: the models (or layers) traced, whose parameters become
        parameter nodes. ``inputs``: ``{name: array}``, arrays to name as
        placeholders (``{"input": x, "labels": y}``).
        """
        self._begin_run(run, layers)
        for name, a in (inputs or {}).items():
            self._placeholder(self._unique(self._join(run, name)), a)
        self._inputs = len(inputs or {})
        try:
            with recording.recorder(self):
                yield self
        finally:
            self._begin_run("", ())

    # -- the recorder protocol ---------------------------------------------------------
    def scope_begin(self, name, obj=None):
        if not self._scopes:
            # The outermost layer's ops are named as its weights are: by its store prefix.
            prefix = obj._prefix().strip("/") if hasattr(obj, "_prefix") else name
            path = self._join(self.run, prefix)
        else:
            path = self._join(self._scopes[-1], name)
        base, i = path, 0
        while path in self._nodes:  # a scope may not take the name of a node
            i += 1
            path = f"{base}_{i}"
        self._scopes.append(path)

    def scope_end(self, name, obj=None):
        if not self._scopes:  # the trace began inside this scope
            return
        path = self._scopes.pop()
        if path in self._last:  # a layer without ops (Dropout at inference) leaves the last one in place
            self._ended = (self._scopes[-1] if self._scopes else None, self._last[path])

    def region_begin(self, name):
        self._regions += 1

    def region_end(self, name):
        self._regions -= 1

    def op_begin(self, call):
        if self._regions:
            return None
        return call, self._scopes[-1] if self._scopes else self.run, len(self._scopes)

    def op_end(self, token, outputs):
        if token is None:
            return
        call, scope, depth = token
        outs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        inputs, attrs = [], {}
        for arg, value in call.inputs.items():
            if _is_array(value):
                inputs.append(self._source(value, arg, scope))
            elif isinstance(value, (list, tuple)) and value and all(_is_array(v) for v in value):
                inputs.extend(self._source(v, f"{arg}[{i}]", scope) for i, v in enumerate(value))  # add(xs), ...
            elif value is not None:
                attrs[arg] = value
        attrs.update(OP_ATTRS.get(call.name, lambda _: {})(call.inputs))
        arrays = [a for a in outs if _is_array(a)]
        if arrays:
            attrs["T"] = arrays[0].dtype
        node = self._add(_Node(self._unique(self._join(scope, call.name)), call.name, inputs, attrs, arrays))
        for port, a in enumerate(arrays):
            self._produced(a, (node.name, port))
        for path in self._scopes if arrays else ():
            self._last[path] = ((node.name, 0), arrays[0])
        if depth > 1 and arrays and arrays[0].dtype.kind == "f":
            self.activations[scope[len(self.run) + 1:] if self.run else scope] = arrays[0]

    # -- sources of the inputs ---------------------------------------------------------
    def _source(self, a, arg, scope):
        """``(node name, port)``, or the Parameter, that holds array ``a``."""
        found = self._find(a)
        if found is None:
            self._scan_parameters()  # a layer may have built its weights during the trace
            found = self._find(a)
        if found is not None:
            return found
        # A layer's input that no op wrote, read by its first op, of the shape and dtype of what the
        # layer before it ended with: that layer finished its output without an op (``x * g``).
        parent, last = self._ended or (None, None)
        if (last is not None and scope not in self._last and self._scopes and len(self._scopes) > 1
                and parent == self._scopes[-2] and tuple(last[1].shape) == tuple(a.shape) and last[1].dtype == a.dtype):
            return last[0]
        self._inputs += 1
        name = self._join(self.run, "input") if self._inputs == 1 else self._join(scope, arg)
        return self._placeholder(self._unique(name), a)

    def _find(self, a):
        """The source of ``a`` itself, else of the memory it views; None when no op or parameter holds it."""
        owner = id(_owner(a))
        for table, key in ((self._by_id, id(a)), (self._params, id(a)), (self._by_owner, owner),
                           (self._param_owners, owner)):
            if key in table:
                return table[key]
        return None

    def _placeholder(self, name, a):
        attrs = {"dtype": a.dtype, "shape": tuple(a.shape)}
        self._add(_Node(name, "Placeholder", [], attrs, [a]))
        self._produced(a, (name, 0))
        return name, 0

    def _produced(self, a, source):
        self._keep.append(a)
        self._by_id[id(a)] = source
        self._by_owner[id(_owner(a))] = source

    # -- names -------------------------------------------------------------------------
    @staticmethod
    def _join(*parts):
        return "/".join(p for p in parts if p)

    def _unique(self, name):
        base, i = name, 0
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        return name

    def _add(self, node):
        self._nodes[node.name] = node
        parts = node.name.split("/")
        self._taken.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        for source in node.inputs:
            if not isinstance(source, tuple):
                entry = self._runs_of.setdefault(id(source), (source, set()))
                entry[1].add(self.run)
        return node

    def parameter_names(self):
        """``{id(parameter): node name}``: the store name, inside its run when only one run reads it."""
        names, taken = {}, set(self._taken)
        for key, (p, runs) in self._runs_of.items():
            run = next(iter(runs)) if len(runs) == 1 else ""
            base = self._join(run, p.name)
            name, i = base, 0
            while name in taken:
                i += 1
                name = f"{base}_{i}"
            names[key] = name
            taken.add(name)
        return names

    # -- the GraphDef ------------------------------------------------------------------
    def graph_def(self):
        """The traced graph as a ``GraphDef`` (tensorboardX's protobuf; no TensorFlow needed)."""
        from tensorboardX.proto import graph_pb2, node_def_pb2, versions_pb2

        names = self.parameter_names()
        nodes = []
        for key, name in names.items():
            p = self._runs_of[key][0]
            attrs = {"dtype": p.dtype, "shape": p.shape, "trainable": bool(p.trainable)}
            nodes.append(node_def_pb2.NodeDef(name=name, op="VariableV2", attr=_attrs(attrs, [(p.shape, p.dtype.name)])))
        for node in self._nodes.values():
            inputs = [_input_name(source, names) for source in node.inputs]
            nodes.append(node_def_pb2.NodeDef(name=node.name, op=node.op, input=inputs,
                                              attr=_attrs(node.attrs, node.outputs)))
        return graph_pb2.GraphDef(node=nodes, versions=versions_pb2.VersionDef(producer=22))


def _input_name(source, parameter_names):
    """A NodeDef input: ``name`` for output 0, ``name:port`` for another output, a parameter's node name."""
    if not isinstance(source, tuple):
        return parameter_names[id(source)]
    name, port = source
    return name if port == 0 else f"{name}:{port}"


def _shape_proto(shape):
    from tensorboardX.proto import tensor_shape_pb2

    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in shape])


def _attrs(attrs, outputs):
    """NodeDef attributes: ``_output_shapes``, dtypes as DataType, shapes, strings, numbers and lists."""
    from tensorboardX.proto import attr_value_pb2

    AttrValue = attr_value_pb2.AttrValue
    out = {"_output_shapes": AttrValue(list=AttrValue.ListValue(shape=[_shape_proto(s) for s, _ in outputs]))}
    for key, value in attrs.items():
        if isinstance(value, numpy.dtype) or (isinstance(value, type) and issubclass(value, numpy.generic)):
            out[key] = AttrValue(type=DATA_TYPES.get(numpy.dtype(value).name, 0))
        elif key == "shape":
            out[key] = AttrValue(shape=_shape_proto(value))
        elif isinstance(value, (bool, numpy.bool_)):
            out[key] = AttrValue(b=bool(value))
        elif isinstance(value, (int, numpy.integer)):
            out[key] = AttrValue(i=int(value))
        elif isinstance(value, (float, numpy.floating)):
            out[key] = AttrValue(f=float(value))
        elif isinstance(value, str):
            out[key] = AttrValue(s=value.encode())
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (int, numpy.integer)) for v in value):
            out[key] = AttrValue(list=AttrValue.ListValue(i=[int(v) for v in value]))
        else:
            out[key] = AttrValue(s=repr(value).encode())
    return out

