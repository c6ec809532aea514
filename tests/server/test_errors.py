"""Every bad request gets its JSON error, and the service is fine afterwards."""

from __future__ import annotations

import gzip

import pytest

from tests.server.fakes import FakePipeline, multipart_body, orchestrator_form, png

pytestmark = pytest.mark.asyncio


async def assert_still_serving(client) -> None:
    """After any error: healthy, and the next valid request (small enough for a 1048-byte
    upload limit) succeeds."""
    assert (await client.get("/health")).status == 200
    response = await client.post("/generate", data=orchestrator_form(png(), "5"))
    assert response.status == 200 and response.headers["X-Seed"] == "5"
    await response.read()


async def assert_json_error(response, status: int, error: str) -> dict:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == error and body["detail"]
    return body


@pytest.mark.parametrize(
    ("image", "seed", "status", "error"),
    [
        (None, "1", 400, "bad request"),  # no file field
        (b"", "1", 400, "bad request"),  # empty file
        (b"not an image", "1", 415, "unsupported media type"),  # the fake's prepare refuses
        (png(), "abc", 422, "unprocessable input"),
        (png(), "1.5", 422, "unprocessable input"),
        (png(), "-2", 422, "unprocessable input"),
        (png(), "4294967296", 422, "unprocessable input"),
        (png(), "", 422, "unprocessable input"),
        (png(), "9" * 100, 422, "unprocessable input"),
    ],
)
async def test_bad_upload(start_app, image, seed, status, error):
    client, fake = await start_app()
    response = await client.post("/generate", data=orchestrator_form(image, seed))
    await assert_json_error(response, status, error)
    assert not fake.calls_of("generate")
    await assert_still_serving(client)


@pytest.mark.parametrize(
    ("seed", "expected"), [(None, "77"), ("-1", "77"), ("4294967295", "4294967295"), (" 42 ", "42")]
)
async def test_seed_defaults_and_bounds(start_app, seed, expected):
    client, fake = await start_app(default_seed=77)
    response = await client.post("/generate", data=orchestrator_form(png(), seed))
    assert response.status == 200
    assert response.headers["X-Seed"] == expected
    assert [call.seed for call in fake.calls_of("generate")] == [int(expected)]


async def test_not_multipart_is_400(start_app):
    client, _ = await start_app()
    response = await client.post("/generate", json={"seed": 1})
    await assert_json_error(response, 400, "bad request")
    await assert_still_serving(client)


_PART_HEAD = 'Content-Disposition: form-data; name="prompt_image_file"; filename="prompt.jpg"'


def _raw_form(*parts: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body from raw parts (each its header lines, a blank line, its bytes)."""
    boundary = b"raw-boundary-7f3a"
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    content_type = f"multipart/form-data; boundary={boundary.decode()}"
    return body + b"--" + boundary + b"--\r\n", {"Content-Type": content_type}


@pytest.mark.parametrize(
    "head",
    [
        (_PART_HEAD[:-1] + "a" * 9000 + '"').encode(),  # a line past aiohttp's 8190 bytes
        b"Content-Disposition form-data",  # no colon
        b"".join(b"X-Extra-%d: v\r\n" % i for i in range(200)) + _PART_HEAD.encode(),
    ],
    ids=["long line", "no colon", "too many"],
)
async def test_a_part_header_aiohttp_refuses_is_400_not_500(start_app, head):
    client, fake = await start_app()
    body, headers = _raw_form(head + b"\r\n\r\n" + png())
    response = await client.post("/generate", data=body, headers=headers)
    detail = (await assert_json_error(response, 400, "bad request"))["detail"]
    prefix = "malformed multipart body: "
    assert detail.startswith(prefix) and len(detail) > len(prefix)  # aiohttp's reason follows
    assert not fake.calls_of("prepare")
    await assert_still_serving(client)


async def test_a_body_whose_content_encoding_does_not_decode_is_400(start_app):
    client, fake = await start_app()
    body, headers = _raw_form(_PART_HEAD.encode() + b"\r\n\r\n" + png())
    response = await client.post(
        "/generate", data=b"not gzip" + body, headers={**headers, "Content-Encoding": "gzip"}
    )
    detail = (await assert_json_error(response, 400, "bad request"))["detail"]
    assert detail.startswith("malformed request body: ") and "gzip" in detail
    assert response.headers["Connection"] == "close"
    assert not fake.calls_of("prepare")
    # The same form, really compressed, is read through the encoding.
    response = await client.post(
        "/generate", data=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"}
    )
    assert response.status == 200
    await response.read()
    await assert_still_serving(client)


async def test_oversized_upload_is_413_by_content_length(start_app):
    client, fake = await start_app(max_upload_mb=0.001)  # 1048 bytes
    response = await client.post(
        "/generate", data=orchestrator_form(png(side=64) + bytes(4000), "1")
    )
    body = await assert_json_error(response, 413, "payload too large")
    assert "Content-Length" in body["detail"]
    assert not fake.calls_of("prepare")
    await assert_still_serving(client)


async def test_oversized_chunked_upload_is_413_by_count(start_app):
    client, fake = await start_app(max_upload_mb=0.001)  # 1048 bytes
    body, content_type = multipart_body(png() + bytes(5000), "1")

    async def chunks():  # an async body goes out chunked: no Content-Length to check
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = await client.post("/generate", data=chunks(), headers={"Content-Type": content_type})
    detail = (await assert_json_error(response, 413, "payload too large"))["detail"]
    assert "so far" in detail  # refused by the running count
    assert not fake.calls_of("prepare")
    await assert_still_serving(client)


async def test_unknown_route_is_json_404(start_app):
    client, _ = await start_app()
    await assert_json_error(await client.get("/nope"), 404, "not found")
    await assert_still_serving(client)


async def test_wrong_method_is_json_405_with_allow(start_app):
    client, _ = await start_app()
    response = await client.get("/generate")
    await assert_json_error(response, 405, "method not allowed")
    assert response.headers["Allow"] == "POST"
    await assert_json_error(await client.post("/health"), 405, "method not allowed")
    await assert_still_serving(client)


async def test_generation_failure_is_500_and_the_next_job_runs(start_app):
    client, _ = await start_app()
    response = await client.post("/generate", data=orchestrator_form(png(b"boom"), "1"))
    body = await assert_json_error(response, 500, "generation failed")
    assert "illegal memory access" in body["detail"]
    await assert_still_serving(client)


async def test_unexpected_exception_is_500_logged_and_survived(start_app, caplog):
    client, _ = await start_app(FakePipeline(describe_error=KeyError("generator")))
    await assert_json_error(await client.get("/"), 500, "internal error")
    assert "unexpected error in GET /" in caplog.text and "Traceback" in caplog.text
    await assert_still_serving(client)
