"""Running many independent tasks: in this process (`local`) or on Dask (`dask`).

    results = map_tasks(fn, items, executor="dask", workers=2)

`fn` must be a module-level function and each item picklable; results come back in the
order of `items` whatever order tasks finish in. Every task runs with one torch thread and
one BLAS thread in both executors, so floating-point reductions are done in the same order
and the results are identical. With `executor="dask"` and no `scheduler`, a `dask.distributed.LocalCluster`
(processes, one thread per worker) is started and closed afterwards; with a scheduler
address (``tcp://host:8786``) the tasks go to that cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterable, Literal, Sequence

from ..errors import UsageError

Executor = Literal["local", "dask"]
log = logging.getLogger("refractor.executors")


def _single_thread(fn: Callable[[Any], Any], item: Any) -> Any:
    """Run `fn(item)` with one torch and one BLAS thread (identical numerics in every executor).

    BLAS reductions split over threads sum in a different order, so the thread count must be
    the same in this process and in Dask workers (which start with one BLAS thread).
    threadpoolctl limits the BLAS of an already running process; without it the local
    executor may differ from Dask in the last bits.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas_single_thread():
            return fn(item)
    finally:
        torch.set_num_threads(before)


def _blas_single_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: see the docstring of _single_thread
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _dask_client(scheduler: str | None, workers: int | None):
    for name in ("distributed", "distributed.scheduler", "distributed.core", "distributed.worker", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from dask.distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise UsageError("the dask executor needs dask[distributed]: pip install 'dask[distributed]'") from exc
    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    cluster = local_cluster(workers or max(1, min(os.cpu_count() or 1, 4)))
    return Client(cluster), cluster


def local_cluster(n_workers: int):
    """A `LocalCluster` of `n_workers` processes with one thread each, for refractor's tasks.

    Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand memory back to
    the OS); with the pipeline's many large temporary arrays this made a case 1.6× slower in
    a worker than in this process (68.7 s vs 112.7 s for one simulated cubic case, same
    worker otherwise). Workers of this cluster keep glibc's default; the thread variables
    (OMP/MKL/OpenBLAS = 1) are kept. A cluster started elsewhere (`--scheduler`) uses its
    own settings: remove that variable from `distributed.nanny.pre-spawn-environ` there too.
    """
    import dask
    from dask.distributed import LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            silence_logs=logging.ERROR)


def map_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any] | Iterable[Any],
    *,
    executor: Executor = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[..., Any] | None = None,
    description: str = "tasks",
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """`[fn(x) for x in items]`, locally or on Dask, with a progress bar (see module doc).

    `on_result(index, result)` is called as each task finishes (in completion order).
    """
    items = list(items)
    bar_factory = progress or _silent
    if executor == "local":
        out = []
        with bar_factory(description, total=len(items)) as bar:
            for i, item in enumerate(items):
                out.append(_single_thread(fn, item))
                if on_result is not None:
                    on_result(i, out[-1])
                bar.update(1)
        return out
    if executor != "dask":
        raise UsageError(f"unknown executor {executor!r}; use 'local' or 'dask'")
    from dask.distributed import as_completed

    client, cluster = _dask_client(scheduler, workers)
    try:
        futures = client.map(_single_thread, [fn] * len(items), items, pure=False)
        position = {f.key: i for i, f in enumerate(futures)}
        with bar_factory(f"{description} (dask, {len(client.scheduler_info()['workers'])} workers)", total=len(items)) as bar:
            for future in as_completed(futures):
                if on_result is not None:
                    on_result(position[future.key], future.result())
                bar.update(1)
        return client.gather(futures)
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


@contextlib.contextmanager
def _null_bar(description: str, total: int | None = None):
    class _B:
        def update(self, n: int = 1) -> None:
            pass

    yield _B()


def _silent(description: str, total: int | None = None):
    return _null_bar(description, total)
