"""perf/latency.py's arithmetic on hand-made numbers: what counts as a success, the audit's
trimmed median (6 lowest and 6 highest dropped above 12 successes, nothing dropped at 12 or
fewer), percentiles, the 90 s and 180 s counts, the server overhead and the throughput."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perf.latency import Result, main, percentile, summarize, trimmed_median


def ok(index: int, header_s: float, generation_s: float | None = None) -> Result:
    """A 200 with a whole GLB body, sent at `index` seconds."""
    generation = header_s - 0.002 if generation_s is None else generation_s
    return Result(
        index,
        f"p{index}",
        sent_s=float(index),
        status=200,
        header_s=header_s,
        body_s=0.01,
        done_s=index + header_s + 0.01,
        size=2**20,
        generation_s=generation,
    )


def failed(index: int, status: int = 500) -> Result:
    return Result(index, f"p{index}", sent_s=float(index), status=status, header_s=0.5,
                  generation_s=None, error="generation failed")  # fmt: skip


def test_more_than_12_successes_drop_the_6_lowest_and_6_highest() -> None:
    # 13 successes: only the 7th smallest (here 7.0) survives the trim.
    times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    value, dropped = trimmed_median(times)
    assert (value, dropped) == (7.0, 12)
    summary = summarize([ok(i, t) for i, t in enumerate(times)])
    assert summary["header_s"]["trimmed_median"] == 7.0
    assert summary["header_s"]["trimmed_dropped"] == 12


def test_12_or_fewer_successes_are_not_trimmed() -> None:
    times = [float(t) for t in range(1, 13)]  # 12 successes
    assert trimmed_median(times) == (6.5, 0)
    # 14 answers but 2 failures: 12 successes, still no trim.
    results = [ok(i, t) for i, t in enumerate(times)] + [failed(12), failed(13, status=503)]
    summary = summarize(results)
    assert summary["successes"] == 12 and summary["failures"] == 2
    assert summary["header_s"]["trimmed_dropped"] == 0
    assert summary["header_s"]["trimmed_median"] == 6.5


def test_trimming_keeps_the_middle_values_only() -> None:
    rng = np.random.default_rng(5)
    times = list(rng.random(31) * 100)
    value, dropped = trimmed_median(times)
    kept = sorted(times)[6:-6]
    assert dropped == 12 and value == pytest.approx(float(np.median(kept)))


def test_no_success_gives_nan_not_an_error() -> None:
    summary = summarize([failed(0), failed(1)])
    assert summary["successes"] == 0 and summary["failures"] == 2
    assert math.isnan(summary["header_s"]["trimmed_median"])
    assert math.isnan(summary["overhead_ms"]["median"])
    assert "throughput_per_s" not in summary


def test_percentile_matches_numpy() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_late_answers_count_over_90_and_at_180_as_a_failure() -> None:
    results = [ok(0, 10.0), ok(1, 95.0), ok(2, 179.9), ok(3, 180.0), ok(4, 240.0)]
    summary = summarize(results)
    assert summary["successes"] == 3 and summary["failures"] == 2
    assert summary["over_90_s"] == 2  # 95 and 179.9; the late two are failures, not successes
    assert summary["at_or_over_180_s"] == 2
    assert summary["header_s"]["max"] == 179.9


def test_a_200_without_a_glb_is_a_failure() -> None:
    broken = ok(0, 1.0)
    broken.error = "body is not a GLB"
    assert not broken.ok
    assert summarize([broken, ok(1, 1.0)])["failures"] == 1


def test_overhead_is_header_time_minus_generation_time() -> None:
    results = [ok(0, 1.000, 0.997), ok(1, 2.000, 1.999), ok(2, 3.0, 2.995)]
    assert [r.overhead_ms for r in results] == pytest.approx([3.0, 1.0, 5.0])
    summary = summarize(results)
    assert summary["overhead_ms"]["median"] == pytest.approx(3.0)
    assert summary["overhead_ms"]["max"] == pytest.approx(5.0)
    missing = ok(3, 1.0)
    missing.generation_s = None  # a server without X-Generation-Time
    assert missing.overhead_ms is None


def test_throughput_is_successes_over_first_send_to_last_byte() -> None:
    results = [ok(0, 2.0), ok(1, 2.0), ok(2, 2.0)]  # sent at 0, 1, 2; last byte at 4.01
    summary = summarize(results, burst=2)
    assert summary["wall_s"] == pytest.approx(4.01)
    assert summary["throughput_per_s"] == pytest.approx(3 / 4.01)


def test_a_server_that_never_gets_healthy_exits_2(tmp_path, unused_tcp_port) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG not really")
    argv = ["--url", f"http://127.0.0.1:{unused_tcp_port}", "--prompts", str(tmp_path)]
    assert main([*argv, "--wait-healthy", "0.2"]) == 2
    assert main(["--prompts", str(tmp_path / "missing")]) == 2
