"""PLACEHOLDER: to be written."""


class LSTMNumba:
    pass
