"""Lesson 3's second half (post 000): a training and a test model that share their weights, seen in TensorBoard's GRAPHS tab.

The original's author trained an LSTM classifier on MNIST rows with two models:
a training model (batch 100, dropout) under ``name_scope("Train")`` and a
test model (another batch size, no dropout) under ``name_scope("Test")``,
both in ``variable_scope("Model")``, the second with ``reuse=True``. The
training accuracy rose; the test accuracy stayed where it started. Tuning
the hyperparameters and simplifying the network changed nothing. The GRAPHS
tab showed why: his weights were made with ``tf.Variable``, which ignores
``reuse``, so each model had weights of its own and the test model's were
never trained. Rewritten with ``tf.get_variable``, the graph showed one set
of variables with edges into both models, and the test accuracy followed
the training accuracy.

In scratchnet a layer's weights always come from a
:class:`~scratchnet.ParameterStore`, so the two cases are two ways of
building the same code:

- shared: ``store.scope("model")`` for the training model and
  ``store.scope("model", reuse=True)`` for the test model;
- unshared: each model in a store of its own (what ``tf.Variable`` did).

:func:`write_lesson` writes both graphs: in ``LOGDIR/shared`` the runs
``Train`` and ``Test`` read one group ``model`` of parameters; in
``LOGDIR/unshared`` each run holds its own ``model`` parameters. Look with
``tensorboard --logdir LOGDIR`` (GRAPHS, then pick the run)::

    from scratchnet.zoo import shared_weights
    shared_weights.write_lesson("runs/seed000")
"""
from __future__ import annotations

import os

import numpy

from .. import layers, losses
from ..model import Sequential
from ..parameters import ParameterStore
from ..summary import write_graph

#: The parameter-store scope of both models' weights (the original's ``variable_scope("Model")``).
SCOPE = "model"


def lstm_classifier(units=32, dropout=0.5):
    """The original's network: rows (28 steps of 28 pixels), ``in`` dense, an LSTM, dropout, ``out`` dense to 10."""
    return Sequential([
        layers.Reshape((28, 28)),
        layers.Dense(units, name="in"),
        layers.LSTM(units, name="lstm"),
        layers.Dropout(dropout),
        layers.Dense(10, name="out"),
    ], name="lstm_classifier")


def train_and_test_models(shared=True, units=32):
    """``(train_model, test_model)``: one set of weights between them when ``shared``, two sets otherwise."""
    stores = [ParameterStore()] if shared else [ParameterStore(), ParameterStore()]
    with stores[0].scope(SCOPE):
        train_model = lstm_classifier(units)
    with stores[-1].scope(SCOPE, reuse=True if shared else None):
        test_model = lstm_classifier(units)
    for model in (train_model, test_model):
        model.build((None, 784))
    train_model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
    return train_model, test_model


def write_lesson(logdir, units=32, train_batch=100, test_batch=1):
    """Write the graphs of the shared and the unshared pair into ``logdir/shared`` and ``logdir/unshared``.

    The training model is traced in training mode with its loss (dropout
    and ``softmax_cross_entropy`` appear under ``Train``) on a batch of
    ``train_batch`` digits; the test model in inference mode on
    ``test_batch``. Returns ``{"shared": path, "unshared": path}``.
    """
    x_train = numpy.zeros((train_batch, 784), numpy.float32)
    y_train = numpy.zeros(train_batch, numpy.int32)
    x_test = numpy.zeros((test_batch, 784), numpy.float32)
    paths = {}
    for name, shared in (("shared", True), ("unshared", False)):
        train_model, test_model = train_and_test_models(shared, units)
        paths[name] = os.path.join(logdir, name)
        write_graph(paths[name], {"Train": (train_model, x_train, y_train, True), "Test": (test_model, x_test)})
    return paths
