"""PLACEHOLDER: to be written."""


class LSTMKernels:
    pass


def lstm(*args, **kwargs):
    raise NotImplementedError("PLACEHOLDER")
