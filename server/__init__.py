"""The HTTP service: aiohttp on uvloop, one generation at a time, with prefetch."""

__all__: list[str] = []
