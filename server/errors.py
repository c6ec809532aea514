"""Every error the service answers, mapped to HTTP in one middleware.

Three sources, one JSON shape `{"error": <short name>, "detail": <what happened>}`:
  1. `pipeline.errors.ServiceError`: status, body and headers
     (e.g. Retry-After) come from the exception;
  2. aiohttp's own `HTTPException`s (404 unknown route, 405 wrong method with its Allow
     header, 413 ...): status and headers kept, the body rewritten as JSON;
  3. anything else: 500, logged with its traceback; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs, web

from pipeline.errors import ServiceError, ServiceUnavailable

__all__ = ["ClientGone", "ServiceUnavailable", "error_middleware", "json_error"]

log = logging.getLogger("server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Headers of an aiohttp HTTPException worth keeping on the JSON answer.
_KEPT_HEADERS = (hdrs.ALLOW, hdrs.RETRY_AFTER)


class ClientGone(ServiceError):
    """The client disconnected before its job started; the job was dropped (nginx's 499).

    Nobody reads this answer: it resolves the job so the handler can finish and log.
    """

    status = 499
    error = "client closed request"


def json_error(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        return json_error(exc.status, exc.error, exc.detail, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        return _from_http_exception(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return json_error(500, "internal error", f"{type(exc).__name__}: {exc}")


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    if isinstance(exc, web.HTTPNotFound):
        detail = f"no route {request.path!r}; routes: GET /, GET /health, POST /generate"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{request.method} is not allowed on {request.path}; use {allowed}"
    else:
        # aiohttp's default text is "<status>: <reason>" unless the raiser gave a detail.
        detail = exc.text or exc.reason
    return json_error(exc.status, exc.reason.lower(), detail, headers)
