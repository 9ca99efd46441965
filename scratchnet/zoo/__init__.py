"""The model zoo: the four models of the lessons, ready to train.

Each model is a :class:`~scratchnet.zoo.recipe.Recipe` (its model, loss,
optimizer and schedule, moving average, data and evaluation). ``scratchnet
train``, the demo and ``bench/train.py`` all train through a recipe and the
one loop of :mod:`scratchnet.training`, so there is one definition of each
model.

==================  ====================  =========================================================  =============================
name                class (file)          model                                                      lesson (original)
==================  ====================  =========================================================  =============================
``mlp``             ``MLP`` (mnist.py)    784-500-10 ReLU, SGD + exponential decay, L2, EMA          1 (post 002, TF book ch. 5)
``lenet``           ``LeNet`` (mnist.py)  conv 5x5x32, pool, conv 5x5x64, pool, FC 512, dropout, FC  2 (post 003, TF book ch. 6.4)
``lstm``            ``LSTMClassifier``    28 rows as 28 steps, 3 x LSTM 256 + dropout, FC 10, Adam   3 (posts 001, 000)
                    (mnist.py)
``charlm``          ``CharLM``            embedding, LSTM 128, dense to the vocabulary, Adam + clip  4 (post 004, TF cookbook 9.3)
                    (language_model.py)
``transformer_lm``  ``TransformerLM``     token + position embedding, 2 causal pre-norm Transformer  6 (beside lesson 4)
                    (transformer_lm.py)   blocks (4 heads, 64 wide), dense to the vocabulary
``resnet``          ``ResNet``            a 3x3 stem, 6 residual blocks (16-32-64) with batch norm,  7 (beside lesson 2)
                    (resnet.py)           global average pooling, dense to 10; SGD + momentum
==================  ====================  =========================================================  =============================

Usage::

    import scratchnet as sn
    data = sn.zoo.load_data("mlp")
    recipe = sn.zoo.build("mlp", data=data)
    sn.training.train(recipe.model, recipe.batches(), 1000, recipe.callbacks())
    print(recipe.evaluate(data.test.images, data.test.labels))   # on the EMA weights
"""
from __future__ import annotations

from .language_model import CharLM, sample, sampling_model
from .mnist import MLP, LeNet, LSTMClassifier
from .recipe import Recipe
from .resnet import ResNet
from .transformer_lm import TransformerLM

#: The recipes by zoo name, in the order the CLI lists them.
RECIPES = {cls.name: cls for cls in (MLP, LeNet, LSTMClassifier, CharLM, TransformerLM, ResNet)}
NAMES = tuple(RECIPES)
#: The lessons' hyperparameters by zoo name.
HPARAMS = {name: dict(cls.hparams) for name, cls in RECIPES.items()}


def recipe_class(name):
    """The :class:`Recipe` subclass of zoo model ``name``."""
    if name not in RECIPES:
        raise ValueError(f"zoo: unknown model {name!r}; choose one of {', '.join(NAMES)}")
    return RECIPES[name]


def load_data(name, **kwargs):
    """The data zoo model ``name`` trains on (see each recipe's ``load_data``)."""
    return recipe_class(name).load_data(**kwargs)


def build(name, data=None, batch_size=None, seed=0, dtype=None, **overrides):
    """The recipe of zoo model ``name``, built and compiled.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    data : optional
        What :func:`load_data` returned.
    batch_size : int, optional
        Default: the lesson's (100).
    seed : int
        Seeds the order of the batches.
    dtype : {"float32", "float64"}, optional
    **overrides
        Hyperparameters replacing the lesson's.
    """
    return recipe_class(name)(data=data, batch_size=batch_size, seed=seed, dtype=dtype, **overrides)


__all__ = ["HPARAMS", "NAMES", "RECIPES", "CharLM", "LSTMClassifier", "LeNet", "MLP", "Recipe", "ResNet", "TransformerLM", "build",
           "load_data", "recipe_class", "sample", "sampling_model"]
