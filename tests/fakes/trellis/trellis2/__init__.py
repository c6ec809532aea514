"""Fake TRELLIS.2 for the tests (see tests/fakes/README.md): the API surface our adapter uses."""

from . import pipelines, representations

__all__ = ["pipelines", "representations"]
