"""PLACEHOLDER: to be written."""


class EmbeddingNumba:
    pass
