"""PLACEHOLDER: to be written."""


class ConvNumba:
    pass
