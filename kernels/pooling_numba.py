"""PLACEHOLDER: to be written."""


class PoolNumba:
    pass
