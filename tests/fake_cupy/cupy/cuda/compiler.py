"""``cupy.cuda.compiler`` of the stand-in: the exception a failed compile raises."""
from __future__ import annotations


class CompileException(Exception):
    def __init__(self, msg, source="", name="", options=(), backend="nvrtc"):
        super().__init__(msg)
        self._msg, self.source, self.name, self.options, self.backend = msg, source, name, options, backend

    def __str__(self):
        return self._msg
