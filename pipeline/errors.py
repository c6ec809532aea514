"""The one error family of the service.

Every failure a client can cause or see is one of these; the server maps them to HTTP in a
single middleware (`server/errors.py`): the status comes from the class, the body is
`{"error": <error>, "detail": <detail>}`. Stages raise them; nothing else is mapped.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "GenerationFailed",
    "PayloadTooLarge",
    "ServerBusy",
    "ServiceError",
    "ServiceUnavailable",
    "UnprocessableInput",
    "UnsupportedMediaType",
]


class ServiceError(Exception):
    """Base of the family: an HTTP status, a short error name and a human detail."""

    status: int = 500
    error: str = "internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


class BadRequest(ServiceError):
    """The request is malformed: a missing or empty field, not multipart."""

    status = 400
    error = "bad request"


class PayloadTooLarge(ServiceError):
    """Too many bytes uploaded, or an image with more pixels than allowed."""

    status = 413
    error = "payload too large"


class UnsupportedMediaType(ServiceError):
    """The upload is not an image format we decode (the detail names what it is)."""

    status = 415
    error = "unsupported media type"


class UnprocessableInput(ServiceError):
    """Well-formed but unusable: a truncated image, a seed that is not an integer in range."""

    status = 422
    error = "unprocessable input"


class ServerBusy(ServiceError):
    """The queue is full; the client should retry after `retry_after` seconds."""

    status = 503
    error = "server busy"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ServiceUnavailable(ServiceError):
    """The service cannot take the job: the model failed to load, or it is shutting down."""

    status = 503
    error = "service unavailable"


class GenerationFailed(ServiceError):
    """The worker failed on a valid input; the server stays up for the next request."""

    status = 500
    error = "generation failed"
