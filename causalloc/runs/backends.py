"""Execute a design: worker processes (local) or Ray tasks, results written to the store.

The run function is ``run_fn(run: dict, context: WorkerContext) -> dict`` (default: the
real worker ``causalloc.runs.worker:execute``, imported lazily in the workers). It gets the
resolved run dict of :mod:`causalloc.runs.design` and returns::

    {"metrics": {name: float, ...},            # every name in run["eval"]["metrics"]
     "trajectory": [{"step", "rs", "fs"}, ...],  # optional
     "max_abs_change_outside_mask": float,       # optional (NaN in runs.csv if absent)
     "mask_size": int, "overlap_with_oracle": float,  # optional
     "timings": {phase: seconds},                # optional
     ...}                                        # anything else JSON: kept as `extra`

Exceptions (and results breaking this contract) mark the run ``failed`` with the traceback.
Only the parent process writes the store, run by run as results arrive; at most
``workers`` runs are in flight (marked ``running``), so a killed executor loses at most
those. A run lost with its worker process (local) or its Ray worker or node is submitted
again up to ``retries`` times (each attempt counted in the store's ``attempts``; the lost
attempts' errors are kept with the result), then recorded as failed.

Matching is checked on what the runs report (:data:`MATCHED`): ``theta_o_fingerprint``
(the sha256 of the theta_o weights a run loaded) must be the same for every run on a
testbed, ``matching_digest`` (its data order and the seed of the objective's draws) the
same for every run of a block. The first value reported for a testbed / block is recorded
in the store's meta table; a result with another value is recorded as failed, naming both.
Every run submitted after the first fingerprint carries it as
``run["expected_theta_o_fingerprint"]``: the real worker refuses to run on other weights.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import fcntl
import importlib
import importlib.util
import json
import multiprocessing
import os
import pickle
import shlex
import shutil
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from causalloc.errors import CausallocError, SpecError
from causalloc.provenance import package_versions, run_environment
from causalloc.runs.design import block_columns, expand, manifest
from causalloc.runs.spec import ExperimentSpec, canonical_json, load_spec, sha256_json
from causalloc.runs.store import RunStore, last_line

DEFAULT_RUN_FN = "causalloc.runs.worker:execute"
BACKENDS = ("local", "ray")
RunFn = Callable[[dict, "WorkerContext"], dict]


@dataclass
class WorkerContext:
    """Created once per worker process and passed to every run-function call, so that the
    run function can keep per-process state (loaded testbed models, tokenizers) in ``cache``."""

    out_dir: str
    threads: int
    cache: dict = field(default_factory=dict)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    versions: dict = field(default_factory=run_environment)  # after the worker set its threads


def resolve_run_fn(run_fn: str | RunFn | None) -> RunFn:
    """A callable from a callable or a ``"module:function"`` path (None: the real worker)."""
    if callable(run_fn):
        return run_fn
    target = run_fn or DEFAULT_RUN_FN
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"run function: expected 'module:function', got {target!r}")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"run function {target!r}: cannot be imported ({exc})") from None
    if not callable(function):
        raise SpecError(f"run function {target!r}: not callable")
    return function


def check_result(result, run: dict) -> dict:
    """Validate a run function's result (contract in the module docstring) and make it
    plain JSON: metrics as floats (NaN allowed), every requested metric present."""
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise TypeError(f"run function must return a dict with a 'metrics' dict, got {result!r:.200}")
    missing = [m for m in run["eval"]["metrics"] if m not in result["metrics"]]
    if missing:
        raise ValueError(f"run function returned no value for metric(s) {missing}")
    out = dict(result)
    out["metrics"] = {str(k): float(v) for k, v in result["metrics"].items()}
    for key in ("max_abs_change_outside_mask", "overlap_with_oracle"):
        if out.get(key) is not None:
            out[key] = float(out[key])
    if out.get("mask_size") is not None:
        out["mask_size"] = int(out["mask_size"])
    return json.loads(json.dumps(out, default=_to_builtin))


def _to_builtin(value):
    """JSON fallback for numpy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_one(run: dict, run_fn: RunFn, context: WorkerContext) -> dict:
    """Call the run function and return an outcome the parent can store (never raises)."""
    start = time.perf_counter()
    try:
        outcome = {"ok": True, "result": check_result(run_fn(run, context), run)}
    except Exception:  # noqa: BLE001  (any failure of a run is recorded, never raised)
        outcome = {"ok": False, "error": traceback.format_exc()}
    outcome.update(seconds=time.perf_counter() - start, versions=context.versions,
                   worker=context.worker)
    return outcome


# per-process worker state ---------------------------------------------------------------
_WORKER: tuple[RunFn, WorkerContext] | None = None


def set_torch_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` if torch is installed (imported only then)."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Let glibc malloc keep freed memory in the process for reuse; False where it cannot.

    A training step allocates and frees the same tens of MB of activations every step. With
    glibc's defaults, blocks above the mmap threshold are mapped fresh and free memory at the
    top of the heap is returned to the OS, so every step page-faults the memory in again:
    about 200,000 faults per 20-step run of ``benchmarks/executor.py`` (tiny testbed),
    2.5 us each on our 2-core VM. With ``M_MMAP_THRESHOLD`` at its maximum (32 MiB) and
    ``M_TRIM_THRESHOLD`` at 1 GiB, runs after a worker's first fault about 20 times each
    (measured with ``resource.getrusage``; train steps 5-10% faster). The price: the worker's
    resident memory stays near its peak. Called once per worker process (and by
    ``workers=0`` in the calling process); a no-op without glibc (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def _init_worker(run_fn: str | RunFn | None, threads: int, out_dir: str) -> None:
    """Process-pool initializer: torch threads, malloc settings, the run function and the
    worker context."""
    global _WORKER
    set_torch_threads(threads)
    keep_freed_memory()
    _WORKER = (resolve_run_fn(run_fn), WorkerContext(out_dir=out_dir, threads=threads))


def _run_in_worker(run: dict) -> dict:
    run_fn, context = _WORKER
    return run_one(run, run_fn, context)


_WORKER_KEY: tuple | None = None  # what the Ray worker process's state was made for


def _ray_task(run: dict, run_fn: str | RunFn | None, threads: int, out_dir: str) -> dict:
    """A Ray task: the worker state is made once per Ray worker process and design (run
    function, threads, output folder), then reused; Ray keeps its worker processes across
    designs, so a task of another design makes it anew."""
    global _WORKER_KEY
    name = f"{run_fn.__module__}:{run_fn.__qualname__}" if callable(run_fn) else run_fn
    if _WORKER is None or _WORKER_KEY != (name, threads, out_dir):
        _init_worker(run_fn, threads, out_dir)
        _WORKER_KEY = (name, threads, out_dir)
    return _run_in_worker(run)


# backends: submit(run) -> handle, wait(handles) -> [(handle, outcome)] ---------------------
class _InProcess:
    """``workers=0``: runs in the calling process, one at a time (debugging, profiling);
    the process's malloc is set up as a worker's (:func:`keep_freed_memory`)."""

    def __init__(self, run_fn, threads, out_dir):
        keep_freed_memory()
        self.run_fn = resolve_run_fn(run_fn)
        self.context = WorkerContext(out_dir=out_dir, threads=threads)
        self.capacity = 1
        self._done: dict[int, dict] = {}

    def submit(self, run: dict) -> int:
        handle = len(self._done)
        self._done[handle] = run_one(run, self.run_fn, self.context)
        return handle

    def wait(self, handles):
        return [(handle, self._done.pop(handle)) for handle in handles]

    def close(self, abort: bool = False) -> None:
        pass


class _ProcessPool:
    """``workers`` spawned processes; a pool broken by a dying worker is replaced and the
    runs that were in flight in it are reported failed."""

    def __init__(self, run_fn, threads, out_dir, workers):
        self.args = (run_fn, threads, out_dir)
        self.capacity = workers
        self.pool = None

    def _ensure_pool(self):
        if self.pool is None:
            self.pool = cf.ProcessPoolExecutor(
                max_workers=self.capacity, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=self.args)
        return self.pool

    def submit(self, run: dict):
        return self._ensure_pool().submit(_run_in_worker, run)

    def wait(self, handles):
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            try:
                out.append((future, future.result()))
            except cf.process.BrokenProcessPool as exc:  # a worker died (or its initializer failed)
                if self.pool is not None:  # every future of the broken pool fails: start anew
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    self.pool = None
                out.append((future, {"ok": False, "lost": True, "error": f"worker process died "
                                     f"while this run was in flight: {exc!r}"}))
        return out

    def close(self, abort: bool = False) -> None:
        """Shut the pool down. With ``abort`` (the driver was interrupted: Ctrl-C, SIGTERM,
        an error), end the workers now instead of after their runs: their results could no
        longer be stored, and workers left behind would hold the CPUs until their runs end.
        The pool's processes are reached through CPython's ``_processes`` because
        ProcessPoolExecutor has no public way to stop them before Python 3.14."""
        if self.pool is None:
            return
        if abort:
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                process.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


class _Ray:
    """One Ray task per run on the runtime of ``ray.init(address=...)`` (or the one already
    initialised), each asking for ``threads`` CPUs and ``gpus`` GPUs; keeps as many in
    flight as the cluster has resources for. A request no node can meet is refused here,
    before anything is submitted (Ray would otherwise queue the tasks forever). Ray does not
    retry a task itself (``max_retries=0``): lost runs are resubmitted by the executor,
    which records the attempts. Ray runs a GPU task in a fresh worker process (its default
    ``max_calls=1`` for GPU tasks, so that each task gets its GPU cleanly): every such run
    loads theta_o again."""

    def __init__(self, run_fn, threads, out_dir, workers, address, gpus=0.0):
        import ray

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started and address:
            ray.init(address=address, log_to_driver=False)
        elif self.started:
            ray.init(include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        if gpus:
            self._check_gpus(gpus, address, resources)
        cpus = int(resources.get("CPU", 1))
        by_gpu = int(resources.get("GPU", 0) // gpus) if gpus else cpus
        self.capacity = max(workers, min(cpus // threads, by_gpu), 1)
        self.task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(_ray_task)
        self.args = (run_fn, threads, out_dir)

    def _check_gpus(self, gpus: float, address, resources: dict) -> None:
        """SpecError unless some live node has ``gpus`` GPUs (a task runs on one node)."""
        most = max((node["Resources"].get("GPU", 0) for node in self.ray.nodes() if node["Alive"]),
                   default=0)
        if most < gpus:
            self.close()
            raise SpecError(
                f"gpus_per_run: each run asks for {gpus:g} GPU(s), but no node of the Ray cluster "
                f"({address or 'a local runtime'}) has that many (most on one node: {most:g}; "
                f"cluster resources: CPU {resources.get('CPU', 0):g}, GPU {resources.get('GPU', 0):g}); "
                "use --gpus-per-run 0 to run on CPUs")

    def submit(self, run: dict):
        return self.task.remote(run, *self.args)

    def wait(self, handles):
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayError:  # a crashed worker or node (run_one never raises)
                out.append((ref, {"ok": False, "lost": True, "error": traceback.format_exc()}))
        return out

    def close(self, abort: bool = False) -> None:
        """Shut down a runtime this backend started (its workers with it); tasks on a
        cluster it joined end with their driver, as Ray does for a driver's tasks."""
        if self.started:
            self.ray.shutdown()


# orchestration ------------------------------------------------------------------------
def execute_design(
    spec_or_path: ExperimentSpec | str | Path,
    out_dir: str | Path,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    run_fn: str | RunFn | None = None,
    *,
    threads_per_worker: int | None = None,
    progress: bool = True,
    command: str | None = None,
    gpus_per_run: float | None = None,
    retries: int = 1,
) -> dict:
    """Run every not-yet-done run of a spec's design and return a summary.

    Writes ``out_dir/runs.sqlite`` (the store), ``design.json`` (schema.md), a copy of the
    spec (``spec.toml``) and, at the end, ``runs.csv``. Done runs are skipped; failed ones
    too unless ``retry_failed``. ``workers``: local worker processes (0 = in this process);
    with Ray, the least number of tasks in flight (default: as many as the cluster has CPUs
    for). ``threads_per_worker``: torch threads per worker (default: CPUs / workers locally,
    1 on Ray). ``gpus_per_run``: GPUs each Ray task requests (default: the spec's
    ``[execution] gpus_per_run``, 0); local workers use this machine's devices and take no
    such request. ``retries``: how many times a run lost with its worker process or node is
    submitted again. The folder is locked while this runs; it refuses a folder holding runs
    of a different design (a superset, e.g. more seeds, is fine).
    """
    if backend not in BACKENDS:
        raise SpecError(f"backend: unknown {backend!r} (known: {', '.join(BACKENDS)})")
    if workers < 0:
        raise SpecError(f"workers: must be >= 0, got {workers}")
    if retries < 0:
        raise SpecError(f"retries: must be >= 0, got {retries}")
    if gpus_per_run is not None and (gpus_per_run < 0 or (gpus_per_run and backend != "ray")):
        raise SpecError(f"gpus_per_run: {gpus_per_run:g} GPUs per run needs backend 'ray' and a "
                        "number >= 0 (local workers use this machine's devices)")
    spec = spec_or_path if isinstance(spec_or_path, ExperimentSpec) else load_spec(spec_or_path)
    if gpus_per_run is None:
        gpus_per_run = spec.execution.gpus_per_run if backend == "ray" else 0.0
    if not callable(run_fn) and run_fn is not None:
        resolve_run_fn(run_fn)  # fail early, in the parent, on a bad path
    elif callable(run_fn) and (backend == "ray" or workers > 0):
        _check_picklable(run_fn)
    if threads_per_worker is None:
        threads_per_worker = 1 if backend == "ray" else max(1, (os.cpu_count() or 1) // max(workers, 1))
    if spec.testbed.file:  # once, before any worker looks for it
        from causalloc.testbed_file import import_testbed

        import_testbed(spec.testbed.file)
    runs = expand(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _folder_lock(out), RunStore(out) as store:
        foreign = store.run_ids() - {run["run_id"] for run in runs}
        if foreign:
            raise SpecError(f"{out}: holds {len(foreign)} run(s) that are not in the design of "
                            f"{spec.source or spec.name!r} (another spec was run here); use a new --out folder")
        store.add_runs(runs)
        recovered = store.recover_interrupted()
        versions = package_versions()
        store.set_meta(spec_hash=spec.spec_hash, metrics=list(spec.eval.metrics),
                       block_columns=list(block_columns(spec)))
        _write_design_files(spec, out, command or shlex.join(sys.argv), versions)
        before = store.counts()
        todo = store.runs_to_do(retry_failed)
        counts = {"done": 0, "failed": 0}
        if todo:
            counts = _drive(store, todo, _make_backend(backend, run_fn, threads_per_worker, str(out),
                                                       workers, address, gpus_per_run), progress, retries)
        _write_design_files(spec, out, command or shlex.join(sys.argv), versions, built_testbed(spec),
                            store.environments())
        csv_path = store.export_csv(out / "runs.csv")
        after = store.counts()
    return {
        "total": len(runs), "done": counts["done"], "failed": counts["failed"],
        "skipped": before["done"], "skipped_failed": 0 if retry_failed else before["failed"],
        "recovered_interrupted": recovered, "wall_seconds": round(time.perf_counter() - start, 3),
        "status": after, "backend": backend, "workers": workers, "gpus_per_run": gpus_per_run,
        "threads_per_worker": threads_per_worker, "out_dir": str(out), "runs_csv": str(csv_path),
    }


def _make_backend(backend, run_fn, threads, out_dir, workers, address, gpus=0.0):
    if backend == "ray":
        return _Ray(run_fn, threads, out_dir, workers, address, gpus)
    if workers == 0:
        return _InProcess(run_fn, threads, out_dir)
    return _ProcessPool(run_fn, threads, out_dir, workers)


def _drive(store: RunStore, todo: list[dict], backend, progress: bool, retries: int = 0) -> dict:
    """Keep ``backend.capacity`` runs in flight, store each result as it arrives; a run lost
    with its worker or node goes back to the front of the queue up to ``retries`` times."""
    from tqdm import tqdm

    queue = deque(todo)
    in_flight: dict = {}
    lost: dict[str, list[str]] = {}  # run id -> last line of each lost attempt's error
    recorded = store.meta("matched", {})  # result key -> {scope: first value reported}
    counts = {"done": 0, "failed": 0}
    bar = tqdm(total=len(todo), unit="run", desc="runs", file=sys.stderr,
               disable=None if progress else True, dynamic_ncols=True)  # None: off unless a tty
    finished = False
    try:
        while queue or in_flight:
            while queue and len(in_flight) < backend.capacity:
                run = queue.popleft()
                store.mark_running(run["run_id"])
                expected = recorded.get("theta_o_fingerprint", {}).get(_testbed_key(run))
                in_flight[backend.submit({**run, "expected_theta_o_fingerprint": expected}
                                         if expected else run)] = run
            for handle, outcome in backend.wait(list(in_flight)):
                run = in_flight.pop(handle)
                attempts = lost.setdefault(run["run_id"], [])
                if outcome.get("lost") and len(attempts) < retries:
                    attempts.append(last_line(outcome["error"]))
                    queue.appendleft(run)
                    continue
                if outcome["ok"]:
                    outcome = _check_matched(outcome, run, recorded, store)
                if outcome["ok"]:
                    result = {**outcome["result"], "lost_attempts": attempts} if attempts else outcome["result"]
                    store.mark_done(run["run_id"], result, outcome["seconds"],
                                    outcome["versions"], outcome["worker"])
                    counts["done"] += 1
                else:
                    error = outcome["error"] + "".join(f"\n(lost attempt: {a})" for a in attempts)
                    store.mark_failed(run["run_id"], error, outcome.get("seconds"),
                                      outcome.get("versions"), outcome.get("worker"))
                    counts["failed"] += 1
                bar.update(1)
                bar.set_postfix(failed=counts["failed"], refresh=False)
        finished = True
    finally:
        bar.close()
        backend.close(abort=not finished)
    return counts


def _testbed_key(run: dict) -> str:
    """Identifies the testbed a run starts from (runs with equal ``testbed`` tables share it)."""
    return sha256_json(run.get("testbed"))


#: result keys every run of one scope must report equal: key -> (scope of a run, what a
#: difference means, with {got} and {want})
MATCHED = {
    "theta_o_fingerprint": (
        _testbed_key, ("theta_o fingerprint mismatch: this run started from theta_o {got}, the "
                       "design's runs from {want}; is the testbed cache (CAUSALLOC_CACHE) on "
                       "storage that every node shares?")),
    "matching_digest": (
        lambda run: run["block_id"] + str(run.get("grid_point", {}).get("steps", "")), ("matching broken: this run's data order and objective "
                                      "draws (digest {got}) differ from those of the other runs "
                                      "of its block ({want}); the conditions of a block must "
                                      "differ only in the mask")),
}


def _check_matched(outcome: dict, run: dict, recorded: dict, store: RunStore) -> dict:
    """The outcome, or a failure if a :data:`MATCHED` value of its result differs from the
    first one reported in its scope (recorded in the store's meta). A run that diverged
    stopped early: its data order is a prefix, so its ``matching_digest`` is not compared."""
    result = outcome["result"]
    for key, (scope_of, problem) in MATCHED.items():
        value = result.get(key)
        if not value or (key == "matching_digest" and result.get("diverged")):
            continue
        seen, scope = recorded.setdefault(key, {}), scope_of(run)
        if scope not in seen:
            seen[scope] = value
            store.set_meta(matched=recorded)
        elif seen[scope] != value:
            return {**outcome, "ok": False, "error": f"ConstraintError: "
                    f"{problem.format(got=value, want=seen[scope])} (worker {outcome.get('worker')})"}
    return outcome


def _check_picklable(run_fn: RunFn) -> None:
    try:
        pickle.dumps(run_fn)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise SpecError(f"run function {run_fn!r}: must be a module-level function (or a "
                        f"'module:function' path) to reach worker processes ({exc})") from None


def built_testbed(spec: ExperimentSpec) -> dict | None:
    """Kind, injection, hash and diagnostics of the spec's testbed from its cache record (the
    report's setup prints them); None when it is not built or the spec names no valid testbed
    (a custom run function need not use one)."""
    from causalloc.runs.worker import testbed_config
    from causalloc.testbed import cached_record

    if spec.testbed.file:
        from causalloc.testbed_file import read_record

        record = read_record(spec.testbed.file)
        return {"kind": record["config"]["kind"], "injection": record["config"].get("injection", "free"),
                "hash": record["hash"], "pinned_file": Path(spec.testbed.file).name,
                "theta_o_fingerprint": record["theta_o_fingerprint"], **record["diagnostics"]}
    described = []
    for _, testbed in spec.testbed.replicates():
        try:
            config = testbed_config(testbed)
        except CausallocError:
            return None
        record = cached_record(config)
        if record is None:
            return None
        described.append({"kind": config.kind, "injection": config.injection, "hash": record["hash"],
                          "seed": testbed["seed"], "theta_o_fingerprint": record.get("theta_o_fingerprint"),
                          **record["diagnostics"]})
    if not spec.testbed.replicated:
        described[0].pop("seed")
        described[0].pop("theta_o_fingerprint")
        return described[0]
    return {**described[0], "replicates": described}


def _write_design_files(spec: ExperimentSpec, out: Path, command: str, versions: dict,
                        testbed: dict | None = None, environments: list[dict] | None = None) -> None:
    design = manifest(spec, command, versions, testbed, environments)
    (out / "design.json").write_text(json.dumps(design, indent=2) + "\n")
    if spec.source and Path(spec.source).is_file():
        target = out / "spec.toml"
        if not target.exists() or not target.samefile(spec.source):
            shutil.copyfile(spec.source, target)
    else:
        (out / "spec.json").write_text(canonical_json(spec.to_dict()) + "\n")


class _folder_lock:
    """Exclusive advisory lock on ``DIR/.causalloc.lock`` (released by the OS if killed)."""

    def __init__(self, out: Path):
        self.path = out / ".causalloc.lock"

    def __enter__(self):
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise CausallocError(f"{self.path.parent}: another `causalloc run` is using this "
                                 "folder; wait for it or use another --out") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def summary_text(summary: dict) -> str:
    """One line for people: what ran, what failed, what was skipped, how long it took."""
    parts = [f"done {summary['done']}", f"failed {summary['failed']}",
             f"skipped {summary['skipped']} already done"]
    if summary["skipped_failed"]:
        parts.append(f"{summary['skipped_failed']} failed earlier (use --retry-failed)")
    if summary["recovered_interrupted"]:
        parts.append(f"{summary['recovered_interrupted']} interrupted earlier, rerun")
    status = summary["status"]
    return (f"{', '.join(parts)}; {status['done']}/{summary['total']} runs done in the store; "
            f"wall {summary['wall_seconds']:.1f} s -> {summary['runs_csv']}")
