"""Header-time latency of a running server, measured the way the competition's orchestrator does.

    python perf/latency.py --url URL --prompts DIR --seed N [--count N] [--repeat R]
                           [--burst K] [--png] [--wait-healthy S] [--json OUT] [--fail-on-error]

Every request is a multipart `POST /generate`: `prompt_image_file` labelled `prompt.jpg`,
`image/jpeg` whatever its bytes are, and `seed`, one seed for every prompt as in a round. The
clock runs from the moment the request starts going out to the moment its response headers
are in (aiohttp returns the response object then, before reading any of the body): the
competition's time (SPEC §1-2). The body is then read on a task of its own.

Sequential (default): the next request goes out the moment the previous response's headers
arrive, while its body is still downloading, as the orchestrator does. `--burst K` keeps K
requests in flight instead (each of K slots sends its next request when its headers arrive),
to exercise the queue and prefetch, and reports the throughput.

Per request: status, header time, body time (headers -> last byte), size, X-Generation-Time
and the server overhead (header time - X-Generation-Time: connecting, sending the request
line and headers, routing, the response headers). A success is a 200 whose whole body is a
GLB, with headers in under 180 s; anything else is a failure (at or over 180 s included, as
in the competition). Summary over the successes' header times: the trimmed median (the 6
lowest and 6 highest dropped when there are more than 12, as the audit does), median, p90
and max; failures; how many took over 90 s and at or over 180 s; the overhead's median, p90
and max. Exits 1 on any failure with `--fail-on-error`, 2 when it cannot run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["Result", "percentile", "summarize", "trimmed_median"]

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"
PROMPT_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg")
TRIM_EACH_SIDE = 6  # the audit drops the 6 lowest and the 6 highest successful times
TARGET_S = 90.0  # the audit rejects a trimmed median over this
FAIL_S = 180.0  # a response this late is a failure
READ_TIMEOUT_S = 360.0  # the orchestrator's read timeout
GLB_MAGIC = b"glTF"


@dataclass
class Result:
    index: int  # position in the run, from 0
    prompt: str  # the prompt file's name
    sent_s: float  # when the request started going out, from the run's start
    status: int = 0  # HTTP status; 0 = no response (connection error, timeout)
    header_s: float | None = None  # request sent -> response headers received
    body_s: float | None = None  # headers -> last byte of the body
    done_s: float | None = None  # when the last byte arrived, from the run's start
    size: int = 0  # body bytes
    generation_s: float | None = None  # the server's X-Generation-Time
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.status == 200
            and self.error is None
            and self.header_s is not None
            and self.header_s < FAIL_S
        )

    @property
    def overhead_ms(self) -> float | None:
        if self.header_s is None or self.generation_s is None:
            return None
        return (self.header_s - self.generation_s) * 1e3


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated linearly between ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def trimmed_median(values: list[float]) -> tuple[float, int]:
    """(median after dropping the 6 lowest and 6 highest, values dropped); all kept at <= 12."""
    ordered = sorted(values)
    if not ordered:
        return math.nan, 0
    if len(ordered) > 2 * TRIM_EACH_SIDE:
        ordered = ordered[TRIM_EACH_SIDE:-TRIM_EACH_SIDE]
        return statistics.median(ordered), 2 * TRIM_EACH_SIDE
    return statistics.median(ordered), 0


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": math.nan, "p90": math.nan, "max": math.nan}
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "max": max(values),
    }


def summarize(results: list[Result], burst: int = 1) -> dict[str, Any]:
    """The run's numbers; header times and overheads over the successes only."""
    successes = [r for r in results if r.ok]
    headers = [r.header_s for r in successes]
    trimmed, dropped = trimmed_median(headers)
    overheads = [r.overhead_ms for r in successes if r.overhead_ms is not None]
    answered = [r.header_s for r in results if r.header_s is not None and r.status == 200]
    summary: dict[str, Any] = {
        "count": len(results),
        "successes": len(successes),
        "failures": len(results) - len(successes),
        "over_90_s": sum(h > TARGET_S for h in headers),
        "at_or_over_180_s": sum(h >= FAIL_S for h in answered),
        "header_s": {"trimmed_median": trimmed, "trimmed_dropped": dropped, **_spread(headers)},
        "overhead_ms": _spread(overheads),
        "generation_s": _spread([r.generation_s for r in successes if r.generation_s is not None]),
        "body_s": _spread([r.body_s for r in successes if r.body_s is not None]),
        "size_mib": _spread([r.size / 2**20 for r in successes]),
        "burst": burst,
    }
    done = [r.done_s for r in successes if r.done_s is not None]
    if results and done:
        wall = max(done) - min(r.sent_s for r in results)
        summary["wall_s"] = wall
        summary["throughput_per_s"] = len(successes) / wall if wall > 0 else math.nan
    return summary


# -- the client -------------------------------------------------------------------------------


class NotHealthy(Exception):
    """/health never answered 200 within --wait-healthy."""


class _Run:
    """One run against one server: sends requests, reads bodies, keeps the results."""

    def __init__(self, session: aiohttp.ClientSession, url: str, seed: int) -> None:
        self.session, self.url, self.seed = session, url, seed
        self.origin = time.perf_counter()
        self.results: list[Result] = []
        self.bodies: list[asyncio.Task[None]] = []

    async def send(self, name: str, data: bytes) -> None:
        """Send one request and return once its headers are in; its body is read on a task."""
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("prompt_image_file", data, filename="prompt.jpg", content_type="image/jpeg")
        form.add_field("seed", str(self.seed))
        started = time.perf_counter()
        result = Result(len(self.results), name, sent_s=started - self.origin)
        self.results.append(result)
        try:
            response = await self.session.post(f"{self.url}/generate", data=form)
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.error = f"request: {type(exc).__name__}: {exc}"
            return
        headers_at = time.perf_counter()
        result.header_s = headers_at - started
        result.status = response.status
        if "X-Generation-Time" in response.headers:
            result.generation_s = float(response.headers["X-Generation-Time"])
        self.bodies.append(asyncio.create_task(self._read_body(response, result, headers_at)))

    async def _read_body(
        self, response: aiohttp.ClientResponse, result: Result, headers_at: float
    ) -> None:
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.error = f"body: {type(exc).__name__}: {exc}"
            return
        finally:
            response.release()
        finished = time.perf_counter()
        result.body_s, result.done_s = finished - headers_at, finished - self.origin
        result.size = len(body)
        if result.status != 200:
            result.error = body[:200].decode("utf-8", "replace")
        elif not body.startswith(GLB_MAGIC):
            result.error = f"body is not a GLB: starts with {body[:8]!r}"

    async def finish(self) -> None:
        await asyncio.gather(*self.bodies)


async def run_sequential(run: _Run, prompts: list[tuple[str, bytes]]) -> None:
    for name, data in prompts:
        await run.send(name, data)


async def run_burst(run: _Run, prompts: list[tuple[str, bytes]], burst: int) -> None:
    pending = iter(prompts)

    async def slot() -> None:
        for name, data in pending:  # one iterator shared by the slots: each prompt once
            await run.send(name, data)

    await asyncio.gather(*(slot() for _ in range(burst)))


async def server_info(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """`GET /` (generator, device, settings, counters), or the error that answered."""
    try:
        async with session.get(f"{url}/") as response:
            return await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def wait_healthy(session: aiohttp.ClientSession, url: str, timeout_s: float) -> bool:
    """Poll /health until it answers 200 (True) or `timeout_s` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with session.get(f"{url}/health") as response:
                if response.status == 200:
                    return True
        except (aiohttp.ClientError, TimeoutError):
            pass  # not listening yet
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)


async def measure(args: argparse.Namespace, prompts: list[tuple[str, bytes]]) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if not await wait_healthy(session, args.url, args.wait_healthy):
            raise NotHealthy(f"{args.url}/health did not answer 200 within {args.wait_healthy} s")
        before = await server_info(session, args.url)
        run = _Run(session, args.url, args.seed)
        if args.burst > 1:
            await run_burst(run, prompts, args.burst)
        else:
            await run_sequential(run, prompts)
        await run.finish()
        after = await server_info(session, args.url)
    return {
        "meta": {
            "url": args.url,
            "mode": f"burst {args.burst}" if args.burst > 1 else "sequential",
            "seed": args.seed,
            "prompts": len(prompts),
            "png": args.png,
            "label": args.label,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "commit": os.environ.get("COMMIT", "unknown"),
            "server": {k: v for k, v in before.items() if k not in ("counters", "endpoints")},
            "counters_after": after.get("counters"),
        },
        "requests": [{**asdict(r), "ok": r.ok, "overhead_ms": r.overhead_ms} for r in run.results],
        "summary": summarize(run.results, args.burst),
    }


# -- input and output -------------------------------------------------------------------------


def load_prompts(folder: Path, count: int, repeat: int, png: bool) -> list[tuple[str, bytes]]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in PROMPT_SUFFIXES)
    prompts = [(p.name, _as_png(p) if png else p.read_bytes()) for p in paths[:count]]
    return prompts * repeat


def _as_png(path: Path) -> bytes:
    """The image re-encoded losslessly as PNG, mode kept (the orchestrator sends PNG)."""
    from PIL import Image  # only for --png

    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _fmt(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def report(measured: dict[str, Any]) -> str:
    meta, summary = measured["meta"], measured["summary"]
    server = meta["server"]
    settings = server.get("settings", {}).get("server", {})
    prefetch = f"on (depth {settings.get('prefetch_depth', '?')})"
    if not settings.get("prefetch"):
        prefetch = "off"
    lines = [
        f"latency: {meta['url']}  {meta['mode']}  seed {meta['seed']}  {meta['prompts']} requests"
        f"  server: {server.get('generator', '?')} on {server.get('device', '?')}, prefetch "
        f"{prefetch}",
        f"{'#':>3}  {'prompt':<14}{'status':>6}{'sent s':>9}{'header s':>10}{'body s':>8}"
        f"{'MiB':>7}{'overhead ms':>13}",
    ]
    for r in measured["requests"]:
        lines.append(
            f"{r['index'] + 1:>3}  {r['prompt'][:12]:<14}{r['status']:>6}{r['sent_s']:>9.3f}"
            f"{_fmt(r['header_s']):>10}{_fmt(r['body_s']):>8}{r['size'] / 2**20:>7.2f}"
            f"{_fmt(r['overhead_ms'], digits=2):>13}" + (f"  {r['error']}" if r["error"] else "")
        )
    header, overhead = summary["header_s"], summary["overhead_ms"]
    kept = summary["successes"] - header["trimmed_dropped"]
    lines += [
        f"header time s: trimmed median {_fmt(header['trimmed_median'])} (median of {kept}, "
        f"{header['trimmed_dropped']} dropped)  median {_fmt(header['median'])}  "
        f"p90 {_fmt(header['p90'])}  max {_fmt(header['max'])}",
        f"successes {summary['successes']}/{summary['count']}  failures {summary['failures']}  "
        f"over 90 s {summary['over_90_s']}  at or over 180 s {summary['at_or_over_180_s']}",
        f"server overhead ms (header time - X-Generation-Time): median "
        f"{_fmt(overhead['median'], digits=2)}  p90 {_fmt(overhead['p90'], digits=2)}  "
        f"max {_fmt(overhead['max'], digits=2)}",
        f"body s: median {_fmt(summary['body_s']['median'])}  size MiB: median "
        f"{_fmt(summary['size_mib']['median'], digits=2)}",
    ]
    if "throughput_per_s" in summary:
        lines.append(
            f"throughput: {summary['throughput_per_s']:.3f} generations/s "
            f"({summary['successes']} in {summary['wall_s']:.2f} s, {summary['burst']} in flight)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:10006", help="the server's base URL")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="folder of images")
    parser.add_argument("--seed", type=int, default=0, help="one seed for every request")
    parser.add_argument("--count", type=int, default=10**9, help="prompts used (sorted by name)")
    parser.add_argument("--repeat", type=int, default=1, help="send the prompt list R times")
    parser.add_argument("--burst", type=int, default=1, help="requests kept in flight (1 = off)")
    parser.add_argument("--png", action="store_true", help="re-encode prompts as PNG first")
    parser.add_argument(
        "--wait-healthy", type=float, default=0.0, metavar="S", help="wait for /health up to S s"
    )
    parser.add_argument("--label", default="", help="free text kept in the JSON (e.g. 'prefetch')")
    parser.add_argument("--json", type=Path, help="write every request and the summary here")
    parser.add_argument("--fail-on-error", action="store_true", help="exit 1 on any failure")
    args = parser.parse_args(argv)
    args.url = args.url.rstrip("/")
    if args.burst < 1 or args.repeat < 1:
        parser.error("--burst and --repeat must be at least 1")
    if not args.prompts.is_dir():
        print(f"no prompt folder at {args.prompts}", file=sys.stderr)
        return 2
    prompts = load_prompts(args.prompts, args.count, args.repeat, args.png)
    if not prompts:
        print(f"no prompts in {args.prompts}", file=sys.stderr)
        return 2
    try:
        measured = asyncio.run(measure(args, prompts))
    except NotHealthy as exc:
        print(exc, file=sys.stderr)
        return 2
    print(report(measured))
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1))
    return 1 if args.fail_on_error and measured["summary"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
