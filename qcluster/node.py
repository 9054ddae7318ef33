"""Composition root: one node process. Imported by nothing but the CLI.

Order of start-up: the HTTP server starts first (probes answer, ``/readyz``
says 503), then the table of contents is opened in a worker thread so the
event loop keeps serving while collections load, then the node is ready.

Shutdown on SIGTERM or SIGINT: stop accepting connections, let in-flight
requests finish (bounded by ``service.shutdown_timeout_s``), then close
storage (flush, stop optimizers) and exit 0. The whole sequence is meant to
take well under 10 seconds.
"""

from __future__ import annotations

import asyncio
import gc
import concurrent.futures
import logging
import os
import pathlib
import signal
import subprocess
import sys
from typing import Final

import threadpoolctl
from aiohttp import web

from qcluster.api.grpc import start_grpc_server
from qcluster.api.rest import build_app
from qcluster.api.state import NodeState
from qcluster.config import Settings

__all__ = ["run_node", "serve"]

_log = logging.getLogger("qcluster.node")
_MIB: Final = 1024 * 1024
_ZERO_COMMIT: Final = "0" * 40
# Seconds left for closing storage after the HTTP server has stopped.
_STORAGE_CLOSE_TIMEOUT_S: Final = 2.5


def git_commit() -> str:
    """The 40-hex commit of the source tree, or zeros when not in a git checkout."""
    source_dir = pathlib.Path(__file__).resolve().parent
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source_dir, capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return _ZERO_COMMIT
    commit = completed.stdout.strip()
    if completed.returncode != 0 or len(commit) != 40:
        return _ZERO_COMMIT
    return commit


def _open_toc(data_dir: pathlib.Path) -> object:
    from qcluster.storage.toc import TableOfContents  # noqa: PLC0415 - loaded after the loop runs

    data_dir.mkdir(parents=True, exist_ok=True)
    return TableOfContents.open(data_dir)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _close_storage(state: NodeState, executor: concurrent.futures.ThreadPoolExecutor) -> bool:
    """Close storage; False if it did not finish in time (it goes on in its thread)."""
    toc = state.toc
    state.toc = None
    if toc is None:
        return True
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(executor, toc.close), timeout=_STORAGE_CLOSE_TIMEOUT_S)
    except TimeoutError:
        _log.error("storage did not close in time; the WAL replays on the next start",
                   extra={"timeout_s": _STORAGE_CLOSE_TIMEOUT_S})
        return False
    return True


async def _load_storage(state: NodeState, settings: Settings, stop: asyncio.Event) -> bool:
    """Open storage in a thread; returns False if it failed (already logged)."""
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(state.executor, _open_toc, settings.data_dir)
    try:
        toc = await opening
    except Exception:  # noqa: BLE001 - reported, and the node exits non-zero
        _log.exception("cannot open storage", extra={"data_dir": str(settings.data_dir)})
        return False
    state.toc = toc  # type: ignore[assignment]
    # Loaded payloads are a large, long-lived heap (1M points: ~1M dicts, a
    # 136 ms full collection); keep them out of the cyclic GC's generations.
    gc.freeze()
    _log.info("storage loaded", extra={"data_dir": str(settings.data_dir),
                                       "collections": len(state.toc.collection_names())})  # type: ignore[union-attr]
    if stop.is_set():
        _log.info("stop requested while loading")
    return True


_storage_left_running = False


async def run_node(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    global _storage_left_running  # noqa: PLW0603 - read once by serve() after the loop ends
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=settings.service.worker_threads, thread_name_prefix="storage"
    )
    state = NodeState(executor=executor, commit=git_commit(),
                      body_bytes_max=settings.service.max_request_size_mb * _MIB, api_key=settings.service.api_key)
    runner = web.AppRunner(build_app(state), handle_signals=False, access_log=None,
                           shutdown_timeout=settings.service.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.service.host, settings.service.http_port, reuse_address=True)
    exit_code = 0
    grpc_server = None
    try:
        try:
            await site.start()
            grpc_server, grpc_port = await start_grpc_server(state, host=settings.service.host,
                                                             port=settings.service.grpc_port)
        except OSError as exc:
            _log.error("cannot listen", extra={"host": settings.service.host, "error": str(exc)})
            return 1
        _log.info("listening", extra={"host": settings.service.host, "http_port": settings.service.http_port,
                                      "grpc_port": grpc_port})
        if await _load_storage(state, settings, stop):
            _log.info("node ready")
            await stop.wait()
        else:
            exit_code = 1
        _log.info("shutting down")
    finally:
        # Stops listening, waits for in-flight handlers up to shutdown_timeout, closes connections.
        # Both servers drain at once, each bounded by shutdown_timeout_s.
        stopping = [runner.cleanup()]
        if grpc_server is not None:
            stopping.append(grpc_server.stop(grace=settings.service.shutdown_timeout_s))
        await asyncio.gather(*stopping)
        _storage_left_running = not await _close_storage(state, executor)
        executor.shutdown(wait=False, cancel_futures=True)
    _log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


def serve(settings: Settings) -> int:
    # Requests run in parallel on the storage thread pool; a BLAS call that
    # also fans out to its own threads oversubscribes the cores (measured: 8
    # concurrent clients on an exact-search segment went from 78 to 756 QPS).
    # OpenMP (FAISS index building) keeps every core.
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")
    exit_code = asyncio.run(run_node(settings))
    if _storage_left_running:
        # toc.close() is still waiting in a worker thread (an index build runs
        # to its next cancellation point, up to seconds on a loaded machine),
        # and the interpreter would join that thread before exiting. Every
        # acknowledged write is in the fsynced WAL and every file is replaced
        # atomically, so ending now is as safe as kill -9 and keeps shutdown
        # within its bound (docs/operations.md "Shutdown").
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code
