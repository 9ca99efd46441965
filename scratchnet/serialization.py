"""Layer configs: the registry that turns a layer into JSON and back.

Every built-in layer, ``Sequential``, and any user layer decorated with
:func:`register` is known by its class name::

    @sn.layers.register
    class LayerNorm(sn.Layer):
        def __init__(self, epsilon=1e-5, name=None, dtype=None):
            super().__init__(name, dtype)
            self.epsilon = epsilon

        def get_config(self):
            return {**super().get_config(), "epsilon": self.epsilon}

:func:`serialize` gives ``{"class_name", "config"}``; :func:`deserialize`
calls ``cls.from_config(config)`` (``Layer.from_config`` is ``cls(**config)``). Exported
models (:mod:`scratchnet.export`) and checkpoints rely on it.
"""
from __future__ import annotations

from . import initializers, regularizers

_REGISTRY: dict = {}


def register(cls=None, *, name=None):
    """Class decorator: make a layer class serializable under ``name`` (default: its class name).

    Registering another class under a taken name is an error; registering the
    same class again is allowed (a re-imported module).
    """

    def add(c):
        key = name or c.__name__
        known = _REGISTRY.get(key)
        if known is not None and known is not c and (known.__module__, known.__qualname__) != (c.__module__, c.__qualname__):
            raise ValueError(f"layers.register: the name {key!r} is taken by {known.__module__}.{known.__qualname__}")
        _REGISTRY[key] = c
        c._registered_name = key
        return c

    return add if cls is None else add(cls)


def registered_name(layer):
    """The name ``layer``'s class is registered under, or None."""
    key = getattr(type(layer), "_registered_name", None)
    return key if key is not None and _REGISTRY.get(key) is type(layer) else None


def serialize(layer):
    """``{"class_name", "config"}``; the config rebuilds the layer (without its weights) via :func:`deserialize`."""
    key = registered_name(layer)
    if key is None:
        raise ValueError(
            f"layers.serialize: {type(layer).__name__} is not a registered layer; decorate the class with "
            f"@sn.layers.register (and give it a get_config()) to save and export it"
        )
    return {"class_name": key, "config": layer.get_config()}


def deserialize(config):
    """The layer a :func:`serialize` dict describes, unbuilt.

    The dict may come from a file (an exported model), so its shape is
    checked here: a malformed one is a ValueError, not a TypeError deep in a
    constructor.
    """
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str) \
            or not isinstance(config.get("config", {}), dict):
        raise ValueError(f"layers.deserialize: expected {{'class_name': str, 'config': dict}}, got {config!r:.200}")
    key = config["class_name"]
    cls = _REGISTRY.get(key)
    if cls is None:
        raise ValueError(
            f"layers.deserialize: unknown layer class {key!r}; known: {sorted(_REGISTRY)} "
            f"(a custom layer must be decorated with @sn.layers.register and its module imported)"
        )
    return cls.from_config(config.get("config", {}))


def decode_arguments(config):
    """Constructor arguments from a config: initializer and regularizer configs become objects again."""
    kwargs = dict(config)
    for key in list(kwargs):
        if key.endswith("_initializer") and isinstance(kwargs[key], dict):
            kwargs[key] = initializers.get(kwargs[key])
        elif key.endswith("_regularizer"):
            kwargs[key] = regularizers.get(kwargs[key])
    return kwargs


def initializer_config(init):
    """An initializer's config; a custom callable is recorded by name only."""
    if isinstance(init, initializers.Initializer):
        return initializers.serialize(init)
    return getattr(init, "__name__", repr(init))
