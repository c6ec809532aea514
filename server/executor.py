"""The executor: owns the pipeline, runs one generation at a time, prefetches the next job.

Shape (vLLM v1): handlers only `run()` (submit, then await the job's future); one asyncio task
is the busy loop `load; while running: take a job; step it`. All executor state lives on the
event loop; threads only run pipeline calls:
  - one GPU thread (a single-worker pool) calls `load`, `warm_up` and every `generate`, so
    generations are strictly sequential and always on the same thread (one CUDA context);
  - a CPU pool runs `prepare` then `stage` (decode, matte, crop, upload on a side stream).

Job life: WAITING (in the bounded queue) -> taken -> PREPARING (unless prefetched) ->
GENERATING -> resolved; or dropped while waiting when its client is gone.

Prefetch: the first `prefetch_depth` waiting jobs have their prepare+stage started as soon as
they are queued (and the pipeline is healthy), so while job N generates, job N+1 is decoded
and uploaded and starts the moment N ends. With prefetch off a job is prepared only when its
turn comes. Either way at most `prefetch_depth + 1` prepared images are held.

Executor state (what `/health` reports): LOADING until `load()` and one `warm_up()` are done
(jobs queue meanwhile), then HEALTHY; FAILED if either raised (waiting jobs fail with 503);
STOPPED after shutdown.

Deadline and fault guard, when the pipeline has a fallback (`has_fallback`: the main generator
is TRELLIS.2, the fallback inflate on the CPU). A job's deadline is `deadline_s` after its
request arrived. A CUDA generation cannot be interrupted safely, so the guard watches instead:
  - the main generation raises (a CUDA OOM included; the pipeline has already released its
    memory): the fallback answers the job;
  - it is still running `fallback_margin_s` before the deadline (or the job was taken too late
    to start it): the job is marked abandoned and the fallback answers it on its own thread
    (`generate_fallback` touches no GPU state). The GPU thread finishes its call, stopping at the
    next stage boundary, and its result is discarded; the next job's generation queues behind
    it on the same thread, under its own deadline. If the abandoned call raises, the device
    check runs at once on the GPU thread (nothing else awaits that call), and its staged image
    and failure are held until the check clears the device.
Both are logged and counted (`fallbacks_error`, `fallbacks_deadline` on `GET /`); a fallback
that fails too is a 500. Without a fallback, jobs run as they come and failures are 500s.

Device fault. When a generation (or a staging) raises, the GPU thread asks the pipeline whether
the device still works (`device_fault`). A sticky CUDA error (an illegal memory access) breaks
every later CUDA call of the process, the staging's pinned upload included, so without this
every later job would fail. After one the state is FAULTED (`/health` 503 with the reason):
every job is staged on the host and answered by the CPU fallback (`fallbacks_fault`), with or
without a main-generation fallback. As soon as no job waits (the fault's own job may still be
running), `on_restart` is called (the server then stops listening, answers what it has read and
restarts its process: a fresh CUDA context), whether or not jobs keep coming: an orchestrator
that sends each request as the last one's headers arrive never leaves the server idle, and its
next request waits in the listening socket's backlog for the new process image. The restart
refuses nothing already read: from then on `close()` leaves the running job, and those of
requests still arriving on open connections, to be answered by the fallback; only `stop()`
(once aiohttp has waited for its handlers) fails what is left. A process image that was itself
started by such a restart (`restarted_after_fault`) and faults before answering any job from
the device does not restart again: the device fails at once in every fresh context, so it stays
on the fallback rather than making every prompt wait for a restart. If such an image's own
pipeline fails to load (a device broken for good), it loads `make_host_pipeline` (inflate on the
CPU) instead and serves from it, FAULTED, rather than refusing every job as FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.cpu_threads import warm_up_worker_threads
from pipeline.errors import GenerationFailed, ServerBusy, ServiceError
from server.errors import ClientGone, ServiceUnavailable

if TYPE_CHECKING:
    from pipeline.run import Generation

__all__ = ["Executor", "GenerationPipeline", "JobResult", "JobTimings", "State"]

log = logging.getLogger("server.executor")


class GenerationPipeline(Protocol):
    """What the executor needs of `pipeline.run.Pipeline` (tests pass a fake)."""

    settings: Any

    def load(self) -> None: ...
    def warm_up(self) -> Any: ...
    def describe(self) -> dict[str, str]: ...
    def prepare(self, data: bytes) -> Any: ...
    def stage(self, prepared: Any) -> Any: ...
    def stage_on_host(self, prepared: Any) -> Any: ...  # for the fallback only, no CUDA call
    def device_fault(self) -> str | None: ...  # None while the device works
    def generate(
        self, staged: Any, seed: int, abandoned: threading.Event | None = None
    ) -> Generation: ...

    # With a fallback (`has_fallback` true): answers a job when `generate` fails or is late;
    # any pipeline: answers every job after a device fault.
    def generate_fallback(self, staged: Any, seed: int) -> Generation: ...


class State(enum.StrEnum):
    LOADING = "loading"
    HEALTHY = "healthy"
    FAULTED = "faulted"  # the device failed for good: the CPU fallback answers until a restart
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class JobTimings:
    wait_s: float = 0.0  # queued -> taken by the worker
    prepare_s: float = 0.0  # prepare + stage on the CPU pool
    prepare_wait_s: float = 0.0  # taken -> prepared: ~0 when the prefetch finished in time
    generate_s: float = 0.0  # generate on the GPU thread (or the fallback's, when it answered)
    prefetched: bool = False  # prepare started while the job was still waiting
    fallback: str = ""  # why the fallback answered: "error", "deadline", "fault"; "" = it did not


_DURATIONS = ("wait_s", "prepare_s", "prepare_wait_s", "generate_s")


@dataclass(frozen=True)
class JobResult:
    job_id: int
    generation: Generation
    timings: JobTimings


@dataclass(eq=False)
class _Job:
    id: int
    data: bytes
    seed: int
    is_gone: Callable[[], bool]  # True once the client has disconnected
    future: asyncio.Future[JobResult]
    queued_at: float = field(default_factory=time.perf_counter)
    arrived_at: float = 0.0  # perf_counter when its request arrived (the deadline's origin)
    staging: asyncio.Future[tuple[Any, float]] | None = None  # (staged image, seconds)
    timings: JobTimings = field(default_factory=JobTimings)


@dataclass
class _Counters:
    jobs_done: int = 0
    jobs_failed: int = 0  # 5xx: the pipeline raised on a valid request
    jobs_rejected_input: int = 0  # 4xx found by prepare (not an image, too many pixels ...)
    rejected_busy: int = 0  # queue full
    dropped_disconnected: int = 0  # client gone before its job started
    # Client gone once its job had started: the job runs on (counted in jobs_done or its
    # outcome's counter), its answer goes nowhere. An orchestrator's timeouts show here.
    gone_while_running: int = 0
    fallbacks_error: int = 0  # the main generator raised (CUDA OOM included): fallback answered
    fallbacks_deadline: int = 0  # the main generator would have passed the deadline: likewise
    fallbacks_fault: int = 0  # the device had failed for good (a sticky CUDA error): likewise


# The states in which jobs are taken, prepared and answered.
_SERVING = (State.HEALTHY, State.FAULTED)
# Longest wait for the device check (it first waits for the device's queued work).
_PROBE_TIMEOUT_S = 30.0


class _AbandonedFailure(Exception):
    """An abandoned main generation raised `error`; `fault` is the device check's verdict,
    asked at once on the GPU thread (None: the device works)."""

    def __init__(self, error: Exception, fault: str | None) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error, self.fault = error, fault


def _generate_watched(
    pipeline: GenerationPipeline, staged: Any, seed: int, abandoned: threading.Event
) -> Generation:
    """`pipeline.generate` on the GPU thread, for a job the fallback may answer instead. When
    the call raises after its job was abandoned, nothing awaits it: the device check runs here
    and then, not behind the next job's generation."""
    try:
        return pipeline.generate(staged, seed, abandoned)
    except Exception as error:
        if not abandoned.is_set() or _client_error(error):
            raise
        raise _AbandonedFailure(error, pipeline.device_fault()) from error


def _client_error(error: BaseException) -> bool:
    """A failure the request caused (4xx), not the device or the generator."""
    return isinstance(error, ServiceError) and error.status < 500


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


class Executor:
    def __init__(
        self,
        make_pipeline: Callable[[], GenerationPipeline],
        *,
        queue_size: int,
        prefetch_depth: int,
        cpu_workers: int,
        retry_after_s: int,
        deadline_s: float = 0.0,
        fallback_margin_s: float = 0.0,
        on_restart: Callable[[], None] | None = None,
        restarted_after_fault: bool = False,
        make_host_pipeline: Callable[[], GenerationPipeline] | None = None,
    ) -> None:
        """`make_pipeline` runs on the GPU thread before `load()`; `prefetch_depth` 0 = off;
        `deadline_s` 0 = no deadline (the fault guard still applies); `on_restart` is called
        once, after a device fault, as soon as no job waits (None: the server stays on the
        fallback); `restarted_after_fault`: this process image began with such a restart;
        `make_host_pipeline`: the pipeline such an image serves from when its own fails to
        load (inflate on the CPU)."""
        self._make_pipeline = make_pipeline
        self.pipeline: GenerationPipeline | None = None  # set once made, before HEALTHY
        self.state = State.LOADING
        self.failure: str | None = None  # why loading failed
        self.fault: str | None = None  # why the device failed for good (state FAULTED)
        self.restart_requested = False  # on_restart was called
        # After a fault, what was staged on the device before it, held for the process's life.
        self._kept_after_fault: list[Any] = []
        self._checks: set[asyncio.Task[None]] = set()  # device checks after abandoned failures
        self.counters = _Counters()
        self._queue_size = queue_size
        self._prefetch_depth = prefetch_depth
        self._retry_after_s = retry_after_s
        self._deadline_s = deadline_s
        self._fallback_margin_s = fallback_margin_s
        self._on_restart = on_restart
        self._faulted_at = 0.0  # perf_counter at the fault
        self._restarted_after_fault = restarted_after_fault
        self._make_host_pipeline = make_host_pipeline
        self.restart_withheld = False  # faulted again before any answer from the device
        # Each thread's torch CPU maths runs on a worker pool of its own, whose first vector-maths
        # call may come back wrong (pipeline/cpu_threads.py): a throwaway one when it starts.
        warm = warm_up_worker_threads
        self._cpu_pool = ThreadPoolExecutor(cpu_workers, "prepare", initializer=warm)
        self._gpu_pool = ThreadPoolExecutor(1, "gpu-worker", initializer=warm)
        self._fallback_pool = ThreadPoolExecutor(1, "fallback", initializer=warm)
        self._waiting: deque[_Job] = deque()
        self._current: _Job | None = None
        self._last: JobTimings | None = None
        self._totals = JobTimings()
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._running = True
        self._task: asyncio.Task[None] | None = None

    # -- front end (handlers) ---------------------------------------------------------------

    async def run(
        self,
        data: bytes,
        seed: int,
        is_gone: Callable[[], bool] = lambda: False,
        arrived_at: float | None = None,
    ) -> JobResult:
        """Queue a job and wait for its result; raises its ServiceError (4xx/5xx/503).

        `arrived_at`: perf_counter when the request arrived (default: now), the deadline's origin.
        """
        job = self._enqueue(data, seed, is_gone, arrived_at)
        try:
            return await job.future
        except asyncio.CancelledError:  # the handler was cancelled: its client went away
            self._abandon(job)
            raise

    def _enqueue(
        self,
        data: bytes,
        seed: int,
        is_gone: Callable[[], bool],
        arrived_at: float | None = None,
    ) -> _Job:
        """Queue a job, or raise: 503 ServerBusy when full, 503 when failed or stopping."""
        if not self._accepting:
            raise ServiceUnavailable("the server is shutting down", headers=self._retry_header())
        if self.state is State.FAILED:
            raise ServiceUnavailable(f"the pipeline failed to load: {self.failure}")
        # A job that arrives to an idle, working worker does not wait: it is one extra slot.
        idle = self.state in _SERVING and self._current is None
        if len(self._waiting) >= self._queue_size + (1 if idle else 0):
            self.counters.rejected_busy += 1
            raise ServerBusy(
                f"{len(self._waiting)} jobs waiting (queue_size {self._queue_size})",
                retry_after=self._retry_after_s,
            )
        job = _Job(next(self._ids), data, seed, is_gone, asyncio.get_running_loop().create_future())
        job.arrived_at = job.queued_at if arrived_at is None else arrived_at
        self._waiting.append(job)
        self._wakeup.set()
        self._fill_prefetch()
        return job

    def snapshot(self) -> dict[str, Any]:
        """Counters, queue and timings for `GET /` (the state is `self.state`)."""
        done = max(self.counters.jobs_done, 1)
        return {
            **asdict(self.counters),
            "queue_length": len(self._waiting),
            "prefetching": sum(job.staging is not None for job in self._waiting),
            "generating": self._current.id if self._current else None,
            "last_job_s": _rounded(asdict(self._last)) if self._last else None,
            "mean_job_s": _rounded({n: getattr(self._totals, n) / done for n in _DURATIONS}),
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start loading in the background and the busy loop after it; returns at once."""
        self._task = asyncio.create_task(self._main(), name="executor")

    def close(self) -> None:
        """Stop taking jobs and fail the waiting ones with 503; the running one may finish.
        During the restart after a device fault nothing is refused: the listening socket no
        longer accepts, and the jobs of the requests already read, or still read on open
        connections, are answered by the fallback before the process image ends."""
        if self.restart_requested:
            log.info("restarting: %d jobs waiting, answered first", len(self._waiting))
            return
        self._refuse_waiting()

    def _refuse_waiting(self) -> None:
        self._accepting = False
        while self._waiting:
            job = self._waiting.popleft()
            self._resolve(
                job, ServiceUnavailable("the server is shutting down", headers=self._retry_header())
            )

    async def stop(self) -> None:
        """Refuse the waiting jobs, stop the busy loop, fail the running job, release the thread
        pools."""
        self._refuse_waiting()
        self._running = False
        self._wakeup.set()
        running, was_loading = self._current, self.state is State.LOADING
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if running is not None:
            self._resolve(running, ServiceUnavailable("the server is shutting down"))
        self.state = State.STOPPED
        if running is not None or was_loading:
            # A pipeline call cannot be interrupted: the process exits once it returns.
            log.info("stopping: the GPU thread finishes its current call first")
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
        self._gpu_pool.shutdown(wait=False, cancel_futures=True)
        self._fallback_pool.shutdown(wait=False, cancel_futures=True)

    # -- the busy loop --------------------------------------------------------------------

    async def _main(self) -> None:
        if not await self._load():
            return
        while self._running:
            job = await self._take()
            if job is None:
                continue
            try:
                await self._step(job)
            except Exception as exc:  # a bug in the executor itself: fail the job, carry on
                self._fail(job, exc, "executor")

    async def _load(self) -> bool:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            # Made here, not in make_app: importing torch and the stages takes seconds, and
            # the port must be bound (answering "loading") from the first moment.
            self.pipeline = pipeline = await loop.run_in_executor(
                self._gpu_pool, self._make_pipeline
            )
            await loop.run_in_executor(self._gpu_pool, pipeline.load)
            loaded = time.perf_counter()
            await loop.run_in_executor(self._gpu_pool, pipeline.warm_up)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            if await self._load_on_the_host(failure):
                return True
            self.state = State.FAILED
            self.failure = failure
            log.exception("pipeline failed to load; /health reports failed")
            refusal = f"the pipeline failed to load: {self.failure}"
            while self._waiting:
                self._resolve(self._waiting.popleft(), ServiceUnavailable(refusal))
            return False
        self.state = State.HEALTHY
        log.info(
            "pipeline healthy: load %.2f s, warm-up %.2f s, %d jobs waiting",
            loaded - started,
            time.perf_counter() - loaded,
            len(self._waiting),
        )
        self._fill_prefetch()
        return True

    async def _load_on_the_host(self, failure: str) -> bool:
        """After a restart for a device fault the device failed to load: serve from the host
        pipeline, FAULTED (each job answered by its CPU fallback), if there is one and it loads."""
        if not self._restarted_after_fault or self._make_host_pipeline is None:
            return False
        log.critical(
            "the pipeline failed to load after a restart for a device fault (%s); loading "
            "inflate on the CPU instead",
            failure,
        )
        loop = asyncio.get_running_loop()
        try:
            pipeline = await loop.run_in_executor(self._gpu_pool, self._make_host_pipeline)
            await loop.run_in_executor(self._gpu_pool, pipeline.load)
        except Exception:
            log.exception("the host pipeline failed to load too")
            return False
        # What the failed pipeline holds on the broken device is never freed (see _mark_faulted).
        self._kept_after_fault.append(self.pipeline)
        self.pipeline = pipeline
        self.state, self.fault = State.FAULTED, f"the device failed to load: {failure}"
        self._faulted_at = time.perf_counter()
        self.restart_withheld = True  # a restart would meet the same device
        log.critical(
            "serving from the CPU fallback, %d jobs waiting; /health reports faulted",
            len(self._waiting),
        )
        self._fill_prefetch()
        return True

    async def _take(self) -> _Job | None:
        """The next job whose client is still there, or None once stopping."""
        while self._running:
            while self._waiting:
                job = self._waiting.popleft()
                if self._is_abandoned(job):
                    self._drop(job)
                    continue
                self._current = job
                self._fill_prefetch()  # the job behind this one starts preparing now
                self._restart_if_due()  # the last one waiting: answered during the restart
                return job
            self._wakeup.clear()
            self._restart_if_due()
            await self._wakeup.wait()
        return None

    async def _step(self, job: _Job) -> None:
        timings = job.timings
        taken = time.perf_counter()
        timings.wait_s = taken - job.queued_at
        try:
            # 1. Prepared image: prefetched already, or prepared now.
            if job.staging is None:
                self._start_staging(job)
            assert job.staging is not None
            try:
                staged, timings.prepare_s = await job.staging
            except Exception as exc:
                if isinstance(exc, ServiceError) or not await self._device_failed():
                    self._fail(job, exc, "prepare")
                    return
                try:  # staged on the device, which has failed since: again on the host
                    self._start_staging(job)
                    staged, timings.prepare_s = await job.staging
                except Exception as again:
                    self._fail(job, again, "prepare")
                    return
            timings.prepare_wait_s = time.perf_counter() - taken
            if self._is_abandoned(job):  # gone while its image was being prepared
                self._drop(job)
                return
            # 2. Generate on the GPU thread (guarded when there is a fallback).
            started = time.perf_counter()
            try:
                generation = await self._generate(job, staged)
            except Exception as exc:
                self._fail(job, exc, "generate")
                return
            timings.generate_s = time.perf_counter() - started
            self._record(timings)
            self._resolve(job, JobResult(job.id, generation, timings))
        finally:
            self._current = None

    async def _generate(self, job: _Job, staged: Any) -> Generation:
        """The main generation; with a fallback, the fallback's answer when it fails or is late."""
        loop = asyncio.get_running_loop()
        pipeline = self._loaded()
        if self.state is State.FAULTED:
            return await self._answer_from_fallback(job, staged, "fault")
        if not getattr(pipeline, "has_fallback", False):
            try:
                return await loop.run_in_executor(
                    self._gpu_pool, pipeline.generate, staged, job.seed
                )
            except Exception as error:
                if _client_error(error) or not await self._device_failed():
                    raise
                return await self._answer_from_fallback(job, staged, "fault")
        # 1. The main generation, watched until `fallback_margin_s` before the deadline.
        budget = self._time_left(job)
        reason = "deadline"
        if budget is None or budget > 0:
            abandoned = threading.Event()
            main = loop.run_in_executor(
                self._gpu_pool, _generate_watched, pipeline, staged, job.seed, abandoned
            )
            done, _ = await asyncio.wait({main}, timeout=budget)
            if main in done:
                error = main.exception()
                if error is None:
                    return main.result()
                if _client_error(error):
                    raise error
                if await self._device_failed():
                    return await self._answer_from_fallback(job, staged, "fault")
                reason = "error"
                log.warning(
                    "job %d: the main generation failed (%s); fallback answers", job.id, error
                )
            else:
                abandoned.set()
                main.add_done_callback(functools.partial(self._discarded, job.id, staged))
        # 2. The fallback answers.
        if reason == "deadline":
            log.warning(
                "job %d: %.1f s since arrival, the main generation would pass the %g s deadline;"
                " fallback answers",
                job.id,
                time.perf_counter() - job.arrived_at,
                self._deadline_s,
            )
        return await self._answer_from_fallback(job, staged, reason)

    async def _answer_from_fallback(self, job: _Job, staged: Any, reason: str) -> Generation:
        """The CPU fallback answers `job`; `reason`: "error", "deadline" or "fault"."""
        counter = f"fallbacks_{reason}"
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        job.timings.fallback = reason
        return await asyncio.get_running_loop().run_in_executor(
            self._fallback_pool, self._loaded().generate_fallback, staged, job.seed
        )

    # -- device fault -----------------------------------------------------------------------

    async def _device_failed(self) -> bool:
        """Whether the device has failed for good (FAULTED, or found so now by the pipeline's
        `device_fault`, asked on the GPU thread); marks the state FAULTED when found."""
        if self.state is State.FAULTED:
            return True
        if self.state is not State.HEALTHY:
            return False
        pipeline = self._loaded()
        probe = asyncio.get_running_loop().run_in_executor(self._gpu_pool, pipeline.device_fault)
        try:
            fault = await asyncio.wait_for(probe, _PROBE_TIMEOUT_S)
        except Exception as exc:  # the probe itself failed or hung: no verdict, carry on
            log.warning("the device check did not answer: %s", f"{type(exc).__name__}: {exc}")
            return False
        if fault is None:
            return False
        if self.state is State.HEALTHY:
            self._mark_faulted(fault)
        return self.state is State.FAULTED

    def _mark_faulted(self, fault: str) -> None:
        self.state, self.fault = State.FAULTED, fault
        self._faulted_at = time.perf_counter()
        restart = (
            "the process restarts as soon as no job waits"
            if self._on_restart is not None
            else "until the process is restarted"
        )
        log.critical(
            "device fault (%s): every CUDA call of this process fails now; the CPU fallback "
            "answers the jobs, %s; /health reports faulted",
            fault,
            restart,
        )
        # Freeing an image staged on the device (tensors used on two streams, pinned buffers)
        # makes torch record CUDA events, which fails on a broken context inside a destructor
        # and aborts the process: those images are held until it ends or restarts. The
        # waiting jobs are staged again, on the host.
        for job in (self._current, *self._waiting):
            if job is not None and job.staging is not None:
                self._kept_after_fault.append(job.staging)
        for job in self._waiting:
            job.staging = None
        self._fill_prefetch()
        self._restart_if_due()

    def _restart_if_due(self) -> None:
        """After a device fault, once no job waits: `on_restart` (called once)."""
        if (
            self.state is not State.FAULTED
            or self.restart_requested
            or self.restart_withheld
            or self._on_restart is None
            or self._waiting
        ):
            return
        c = self.counters
        from_device = c.jobs_done - c.fallbacks_error - c.fallbacks_deadline - c.fallbacks_fault
        if self._restarted_after_fault and from_device == 0:
            self.restart_withheld = True
            log.critical(
                "the device faulted again before this process image, started by a restart after "
                "a fault, answered any job from it: no further restart; the CPU fallback answers "
                "until the process is restarted from outside"
            )
            return
        self.restart_requested = True
        log.critical(
            "no job waits since the device fault: restarting the process (%.1f s after the "
            "fault, %d jobs answered by the fallback so far, %s)",
            time.perf_counter() - self._faulted_at,
            self.counters.fallbacks_fault,
            "one running" if self._current is not None else "none running",
        )
        self._on_restart()

    def _time_left(self, job: _Job) -> float | None:
        """Seconds until the main generation must give way (None: no deadline)."""
        if self._deadline_s <= 0:
            return None
        give_way = job.arrived_at + self._deadline_s - self._fallback_margin_s
        return give_way - time.perf_counter()

    def _discarded(self, job_id: int, staged: Any, main: asyncio.Future[Any]) -> None:
        """The abandoned main generation of `job_id` ended: its result goes nowhere. If it
        raised, the device may have failed with it: `staged` and the failure (whose frames
        hold the generation's tensors) stay alive until the device check clears the device,
        since freeing them on a broken CUDA context aborts the process."""
        error = None if main.cancelled() else main.exception()
        outcome = "cancelled" if main.cancelled() else repr(error or "a result")
        log.info("job %d: the abandoned main generation ended (%s), discarded", job_id, outcome)
        if error is None or _client_error(error):
            return
        check = asyncio.get_running_loop().create_task(self._after_abandoned(main, staged))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _after_abandoned(self, main: asyncio.Future[Any], staged: Any) -> None:
        """Holds what an abandoned generation that raised had on the device, for the process's
        life if the device has failed."""
        error = main.exception()
        if isinstance(error, _AbandonedFailure):  # checked on the GPU thread as it raised
            if error.fault is not None and self.state is State.HEALTHY:
                self._mark_faulted(error.fault)
            failed = self.state is State.FAULTED
        else:  # it raised before it was abandoned: ask now (behind any queued generation)
            failed = await self._device_failed()
        if failed:
            self._kept_after_fault.append((main, staged))

    # -- helpers --------------------------------------------------------------------------

    def _fill_prefetch(self) -> None:
        """Start prepare+stage for the first `prefetch_depth` live waiting jobs."""
        if self.state not in _SERVING or not self._accepting:
            return
        ahead = 0
        for job in self._waiting:
            if ahead >= self._prefetch_depth:
                break
            if self._is_abandoned(job):
                continue  # dropped when taken; not worth preparing
            if job.staging is None:
                job.timings.prefetched = True
                self._start_staging(job)
            ahead += 1

    def _start_staging(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        job.staging = loop.run_in_executor(self._cpu_pool, self._prepare_and_stage, job.data)
        # A dropped job's staging is never awaited: retrieve its exception so asyncio does
        # not report it as lost.
        job.staging.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _prepare_and_stage(self, data: bytes) -> tuple[Any, float]:
        started = time.perf_counter()
        pipeline = self._loaded()
        prepared = pipeline.prepare(data)
        if self.state is State.FAULTED:  # no CUDA call: the fallback reads the host copy
            staged = pipeline.stage_on_host(prepared)
        else:
            staged = pipeline.stage(prepared)
        return staged, time.perf_counter() - started

    def _is_abandoned(self, job: _Job) -> bool:
        return job.future.done() or job.is_gone()

    def _drop(self, job: _Job) -> None:
        self.counters.dropped_disconnected += 1
        log.info(
            "job %d dropped: client gone after %.2f s waiting",
            job.id,
            time.perf_counter() - job.queued_at,
        )
        self._resolve(job, ClientGone("the client disconnected before its job started"))

    def _abandon(self, job: _Job) -> None:
        """The handler was cancelled: take the job out of the queue if it is still there;
        a job already started runs on, its answer going nowhere."""
        if job in self._waiting:
            self._waiting.remove(job)
            self._drop(job)
            self._fill_prefetch()
        elif job is self._current:  # (awaiting it, the handler's cancel cancelled its future)
            self.counters.gone_while_running += 1
            log.info("job %d: client gone while it runs; its answer goes nowhere", job.id)

    def _fail(self, job: _Job, exc: Exception, stage: str) -> None:
        if isinstance(exc, ServiceError):
            error = exc  # the pipeline's own verdict, e.g. 415 not an image
        else:
            log.error("job %d: %s raised", job.id, stage, exc_info=exc)
            error = GenerationFailed(f"{stage} failed: {type(exc).__name__}: {exc}")
        if error.status >= 500:
            self.counters.jobs_failed += 1
        else:
            self.counters.jobs_rejected_input += 1
        self._resolve(job, error)

    def _record(self, timings: JobTimings) -> None:
        self.counters.jobs_done += 1
        self._last = timings
        for name in _DURATIONS:
            setattr(self._totals, name, getattr(self._totals, name) + getattr(timings, name))

    def _loaded(self) -> GenerationPipeline:
        assert self.pipeline is not None, "jobs are only prepared once the pipeline is healthy"
        return self.pipeline

    def _retry_header(self) -> dict[str, str]:
        return {"Retry-After": str(self._retry_after_s)}

    @staticmethod
    def _resolve(job: _Job, outcome: JobResult | BaseException) -> None:
        if job.future.done():  # cancelled with its handler
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)
