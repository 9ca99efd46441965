"""The three MNIST models of the lessons: an MLP (lesson 1), LeNet-5 (lesson 2) and an LSTM over image rows (lesson 3).

Every model takes flat ``(N, 784)`` rows and returns ``(N, 10)`` logits. The
defaults are the originals' hyperparameters, except where an original's advice is known
to be wrong; each such fix is stated in the class docstring.
"""
from __future__ import annotations

import numpy

from .. import data as sn_data
from .. import initializers, layers, optimizers, schedules
from ..model import Sequential
from .recipe import Recipe, l2

#: Training examples in MNIST's train split (``read_data_sets``' 55,000), for
#: the learning-rate decay when a recipe is built without data.
MNIST_TRAIN_SIZE = 55000


class MnistRecipe(Recipe):
    """A model trained on MNIST: batches drawn in a seeded order, epoch by epoch."""

    @classmethod
    def load_data(cls, data=None, test_data=None, fashion=False, validation_size=None, download=True,
                  batch_size=None, progress=True):
        """:func:`scratchnet.data.load_mnist`'s splits.

        When full MNIST is not found and cannot be downloaded (and no
        ``data`` folder was named), they fall back to the 5,000-digit sample,
        tested on ``test_data`` when given, and ``.source`` says so.
        """
        return sn_data.load_mnist(
            data, kind="fashion" if fashion else "mnist", validation_size=validation_size, download=download,
            allow_sample=not fashion, test_path=test_data, progress=progress,
        )

    @property
    def train_size(self):
        return self.data.train.num_examples if self.data is not None else MNIST_TRAIN_SIZE

    def count_steps_per_epoch(self):
        return max(1, self.train_size // self.batch_size)

    def batches(self, start_step=0):
        """Training batches forever, from global step ``start_step``: yields ``(epoch, x, y)``.

        Each epoch's order is drawn from ``(seed, epoch)``, so a run resumed at
        step ``s`` sees exactly the batches the killed run would have seen.
        """
        if self.data is None:
            raise ValueError(f"{self.name}: this recipe was built without data; pass data= to build()")
        images, labels = self.data.train.images, self.data.train.labels
        B, step = self.batch_size, start_step
        while True:
            epoch, i = divmod(step, self.steps_per_epoch)
            order = numpy.random.default_rng([self.seed, epoch]).permutation(len(images))
            idx = order[i * B:(i + 1) * B]
            yield epoch, images[idx], labels[idx]
            step += 1

    def sgd_with_decay(self, hp):
        """``tf.train.exponential_decay(base, global_step, num_examples / BATCH_SIZE, decay)``.

        The rate falls by ``decay_rate`` once per epoch, smoothly (not staircase).
        """
        schedule = schedules.ExponentialDecay(hp["learning_rate"], self.train_size / self.batch_size, hp["decay_rate"])
        return optimizers.SGD(schedule)


class MLP(MnistRecipe):
    """Lesson 1's MNIST MLP (post 002): 784-500-10 ReLU.

    SGD with ``ExponentialDecay(0.8, one epoch of steps, 0.99)``, L2 1e-4 in the
    original's sense (``tf.contrib.layers.l2_regularizer(1e-4)``, i.e.
    ``sn.regularizers.l2(5e-5)``) on both weight matrices, EMA 0.99 with
    ``num_updates`` = global step, evaluated on the averaged weights.
    Batch 100, 30,000 steps; the original reaches 98.4% test accuracy.
    """

    name = "mlp"
    hparams = dict(
        hidden=500, init_stddev=0.1, bias_init=0.1,
        optimizer="sgd", learning_rate=0.8, decay_rate=0.99, l2=1e-4, ema_decay=0.99,
        batch_size=100, steps=30000,
    )

    def make_model(self, hp, dtype):
        tn = initializers.truncated_normal(stddev=hp["init_stddev"])
        bias = initializers.constant(hp["bias_init"])
        model = Sequential([
            layers.Dense(hp["hidden"], activation="relu", kernel_initializer=tn, bias_initializer=bias,
                         kernel_regularizer=l2(hp), name="layer1"),
            layers.Dense(10, kernel_initializer=tn, bias_initializer=bias, kernel_regularizer=l2(hp), name="layer2"),
        ], name="mlp", dtype=dtype)
        model.build((None, 784))
        return model

    def make_optimizer(self, hp):
        return self.sgd_with_decay(hp)


class LeNet(MnistRecipe):
    """Lesson 2's LeNet-5 (post 003): conv 5x5x32 SAME, max-pool 2x2 SAME, conv 5x5x64 SAME, max-pool, FC 512, dropout 0.5, FC 10.

    Two fixes from the original: the base learning rate is 0.01, not the book's
    0.8, which diverges; and L2 (1e-4, the original's sense) is on the last layer only.
    SGD with exponential decay 0.99 per epoch, EMA 0.99, batch 100.
    """

    name = "lenet"
    hparams = dict(
        conv1=32, conv2=64, kernel_size=5, fc=512, dropout=0.5, init_stddev=0.1,
        optimizer="sgd", learning_rate=0.01, decay_rate=0.99, l2=1e-4, ema_decay=0.99,
        batch_size=100, steps=30000,
    )

    def make_model(self, hp, dtype):
        tn = initializers.truncated_normal(stddev=hp["init_stddev"])
        k = hp["kernel_size"]
        model = Sequential([
            layers.Reshape((28, 28, 1)),
            layers.Conv2D(hp["conv1"], k, padding="same", activation="relu", kernel_initializer=tn, name="layer1-conv1"),
            layers.MaxPool2D(2, 2, padding="same", name="layer2-pool1"),
            layers.Conv2D(hp["conv2"], k, padding="same", activation="relu", kernel_initializer=tn, name="layer3-conv2"),
            layers.MaxPool2D(2, 2, padding="same", name="layer4-pool2"),
            layers.Flatten(),
            layers.Dense(hp["fc"], activation="relu", kernel_initializer=tn,
                         bias_initializer=initializers.constant(0.1), name="layer5-fc1"),
            layers.Dropout(hp["dropout"]),
            layers.Dense(10, kernel_initializer=tn, bias_initializer=initializers.constant(0.1),
                         kernel_regularizer=l2(hp), name="layer6-fc2"),
        ], name="lenet", dtype=dtype)
        model.build((None, 784))
        return model

    def make_optimizer(self, hp):
        return self.sgd_with_decay(hp)


class LSTMClassifier(MnistRecipe):
    """Lesson 3's MNIST LSTM (post 001): 28 rows as time steps, 3 LSTM layers of 256, output dropout keep 0.5, FC 10.

    ``DropoutWrapper(cell, output_keep_prob=0.5)`` on every cell is a
    :class:`~scratchnet.layers.Dropout` (rate 0.5) after every LSTM layer; the
    last layer returns its last step only (``output[:, -1, :]``). Adam 1e-3,
    batch 100, 2,000 steps. Training and evaluation run the same model
    object, so they share every weight (post 000's point), and dropout acts
    only with ``training=True``.
    """

    name = "lstm"
    hparams = dict(
        units=256, layers=3, dropout=0.5, init_stddev=0.1,
        optimizer="adam", learning_rate=1e-3,
        batch_size=100, steps=2000,
    )

    def make_model(self, hp, dtype):
        stack = [layers.Reshape((28, 28))]
        for i in range(hp["layers"]):
            last = i == hp["layers"] - 1
            stack += [
                layers.LSTM(hp["units"], return_sequences=not last, name=f"lstm{i + 1}"),
                layers.Dropout(hp["dropout"]),
            ]
        stack.append(layers.Dense(10, kernel_initializer=initializers.truncated_normal(stddev=hp["init_stddev"]),
                                  bias_initializer=initializers.constant(0.1), name="output"))
        model = Sequential(stack, name="lstm", dtype=dtype)
        model.build((None, 784))
        return model

    def make_optimizer(self, hp):
        return optimizers.Adam(hp["learning_rate"])
