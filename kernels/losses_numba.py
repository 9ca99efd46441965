"""PLACEHOLDER: to be written."""


class LossNumba:
    pass
