"""Read `POST /generate`'s multipart body ourselves, counting bytes as they arrive.

The orchestrator labels the image `prompt.jpg` / `image/jpeg` whatever its bytes are, so the
part's file name and content type are ignored: only the field name matters and the pipeline
sniffs the format from the bytes. Limits are enforced twice: a declared Content-Length over
the limit is refused before a byte is read, and a running count refuses a chunked or lying
upload as soon as it passes the limit (nothing past the limit is ever buffered).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from pipeline.errors import BadRequest, PayloadTooLarge, UnprocessableInput
from server.config import MIB, SEED_MAX

__all__ = ["IMAGE_FIELD", "SEED_FIELD", "Upload", "parse_seed", "read_upload"]

IMAGE_FIELD = "prompt_image_file"
SEED_FIELD = "seed"

# Read size per await: large enough to keep the per-chunk overhead negligible, small enough
# that the byte count stops an oversized upload within 256 KiB of the limit.
_CHUNK_BYTES = 256 * 1024
# A seed is at most 10 digits and a sign; anything much longer is not a seed.
_SEED_MAX_BYTES = 64
_INTEGER = re.compile(r"[+-]?[0-9]+")
# The base miner's "no seed" value, kept so clients written for it behave the same here.
_DEFAULT_SEED_SENTINEL = -1


@dataclass(frozen=True)
class Upload:
    image: bytes  # the file's bytes, as sent (format not yet known)
    seed: int  # 0..2^32-1, the default already applied


def parse_seed(text: str | None, default: int) -> int:
    """The seed form field as an integer in 0..2^32-1.

    A missing field (`None`) and "-1" (the base miner's default) both mean `default`.
    Anything else that is not a base-10 integer in range is a 422.
    """
    if text is None:
        return default
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise UnprocessableInput(f"seed must be an integer in 0..{SEED_MAX}, got {text!r}")
    seed = int(stripped)
    if seed == _DEFAULT_SEED_SENTINEL:
        return default
    if not 0 <= seed <= SEED_MAX:
        raise UnprocessableInput(
            f"seed must be in 0..{SEED_MAX} (or -1 for the default), got {seed}"
        )
    return seed


async def read_upload(request: web.Request, *, max_bytes: int, default_seed: int) -> Upload:
    """The image and seed of a `POST /generate`; raises the pipeline's 400/413/422 errors.

    `max_bytes` bounds the whole body: the declared Content-Length, and the bytes of every
    part as they are read. A missing seed (or -1) becomes `default_seed`.
    """
    # 1. Refuse on the declared size before reading anything.
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes, f"Content-Length is {declared} bytes"))
    # 2. Only multipart/form-data carries a file.
    if request.content_type != "multipart/form-data":
        raise BadRequest(
            f"expected multipart/form-data with fields {IMAGE_FIELD!r} and "
            f"{SEED_FIELD!r}, got Content-Type {request.content_type!r}"
        )
    # 3. Read every part with one running count.
    budget = _Budget(max_bytes)
    fields: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, MultipartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            limit = _SEED_MAX_BYTES if part.name == SEED_FIELD else None
            data = await _read_part(part, budget, limit)
            if part.name is not None:
                fields.setdefault(part.name, data)  # the first part of a name wins
    except (ValueError, RuntimeError, AssertionError) as exc:
        # aiohttp's multipart parser reports a malformed body (bad boundary, truncated
        # part) with these; our own ServiceErrors are not among them.
        raise BadRequest(f"malformed multipart body: {exc}") from None
    except HttpProcessingError as exc:
        # A part's headers that aiohttp's header parser refuses: a line over its 8190
        # bytes, a line without a colon, too many lines.
        raise BadRequest(f"malformed multipart body: {exc.message}") from None
    except web.RequestPayloadError as exc:
        # The request's own Content-Encoding does not decode (a gzip body that is not).
        reason = str(exc).split("message:", 1)[-1].strip()  # aiohttp's "400, message: ..."
        raise BadRequest(f"malformed request body: {reason}") from None
    # 4. Validate the fields.
    image = fields.get(IMAGE_FIELD)
    if image is None:
        raise BadRequest(f"missing file field {IMAGE_FIELD!r}")
    if not image:
        raise BadRequest(f"file field {IMAGE_FIELD!r} is empty")
    seed_bytes = fields.get(SEED_FIELD)
    try:
        seed_text = None if seed_bytes is None else seed_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise UnprocessableInput("seed must be ASCII digits") from None
    return Upload(image, parse_seed(seed_text, default_seed))


class _Budget:
    """Bytes left for the whole body."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def spend(self, count: int) -> None:
        self.used += count
        if self.used > self.max_bytes:
            raise PayloadTooLarge(_too_large(self.max_bytes, f"{self.used} bytes so far"))


async def _read_part(part: BodyPartReader, budget: _Budget, limit: int | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK_BYTES):
        budget.spend(len(chunk))
        size += len(chunk)
        if limit is not None and size > limit:
            raise UnprocessableInput(f"field {part.name!r} is longer than {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_bytes: int, seen: str) -> str:
    return f"upload limit is {max_bytes} bytes ({max_bytes / MIB:g} MiB); {seen}"
