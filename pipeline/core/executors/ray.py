"""Run a stage's per-item work on a Ray cluster: an actor pool around :func:`pipeline.core.runner.execute_item`.

``runner.executor: ray`` in ``params.yaml`` makes :func:`pipeline.core.runner.make_executor` build a
:class:`RayExecutor`. The driver (the ``maskloop <stage>`` process that ``dvc repro`` starts) still does
everything that decides *what* to compute: fingerprints, skipping up-to-date items, the stage report,
removing outputs of vanished items. Only the items left to compute go to the cluster, where each actor
runs the very same :func:`~pipeline.core.runner.execute_item` as the local pool: it reads the inputs, runs the
stage's ``process``, writes outputs and the item's state record atomically (temp file + rename) on the
shared storage, and returns a small :class:`~pipeline.core.runner.ItemOutcome`. Pixels never travel through
the driver or Ray's object store.

Why an actor pool (and not Ray Data ``map_batches``): an actor runs ``stage.setup`` once (model weights
are loaded once per actor, on the GPU it was given), keeps the resource for all the items it is sent, and
a killed actor is restarted by Ray, which re-runs the calls it had in flight (``runner.ray.max_retries``).
Items are independent files on shared storage with outputs written by the worker itself, so Ray Data's
block format, streaming shuffles and object-store traffic would add cost without adding anything.

Guarantees kept from the local pool (and checked by ``tests/ray``):

- outputs are byte-identical to the local executor at any worker count (same ``execute_item``; records
  are sorted by key by the driver, never by completion order);
- an item whose ``process`` raises is a failed item, the others go on;
- a worker killed mid-item is restarted and the item retried up to ``runner.ray.max_retries`` times;
  after that the item is reported failed (no state is recorded, so the next run computes it again) and
  the rest of the stage goes on with a replacement actor;
- a failing ``setup`` (e.g. missing checkpoint) is fatal and named, as with the local pool.

Set-up rules for a real cluster (see ``docs/scale-out.md``): every node has the same maskloop installed
(checked: actors compare a digest of the code they run with the driver's) and sees the project folder at
the same absolute path (shared filesystem); ``MASKLOOP_RAY_WORKDIR`` overrides that path for the workers.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import re
import socket
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.core.params import RayParams, RunnerParams
from pipeline.core.work import ItemOutcome, Stage, WorkItem, execute_item

log = logging.getLogger(__name__)

WORKDIR_ENV = "MASKLOOP_RAY_WORKDIR"
#: Seconds to wait for the actor pool to start before giving up with a clear error.
STARTUP_TIMEOUT_S = float(os.environ.get("MASKLOOP_RAY_STARTUP_TIMEOUT", "300"))
#: Calls kept in flight per actor (one running + one queued, so an actor never waits for the driver).
DEPTH = 2


def code_digest(module_names: Sequence[str]) -> str:
    """SHA-256 over the source files of ``module_names`` (sorted): the code an item's result depends on.

    Modules that cannot be imported or have no file (e.g. a function shipped by value) contribute their
    name only, so driver and worker still compute the same digest for the same code.
    """
    h = hashlib.sha256()
    for name in sorted(set(module_names)):
        h.update(name.encode() + b"\0")
        try:
            mod = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:
            continue
        path = getattr(mod, "__file__", None)
        if path and os.path.isfile(path):
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def stage_modules(stage: Stage[Any]) -> list[str]:
    """The maskloop modules whose code decides a stage's outputs (runner, io and the stage's own)."""
    names = ["pipeline.core.runner", "pipeline.core.io"]
    for fn in (stage.process, stage.setup):
        mod = getattr(fn, "__module__", None) if fn is not None else None
        if mod and mod.split(".")[0] in ("pipeline", "qa"):
            names.append(mod)
    return sorted(set(names))


#: Driver environment variables that workers need to behave like local pool workers (which inherit the
#: whole environment): the numba JIT cache a stage points at, and maskloop's own settings.
FORWARDED_ENV_PREFIXES = ("NUMBA_", "MASKLOOP_")


def forwarded_env(environ: Any) -> dict[str, str]:
    """The part of ``environ`` sent to Ray workers (never secrets: tokens and keys stay on the driver)."""
    return {
        k: v for k, v in sorted(environ.items())
        if k.startswith(FORWARDED_ENV_PREFIXES) and not any(w in k for w in ("TOKEN", "KEY", "PASSWORD", "SECRET"))
    }


class StageActor:
    """One worker of the pool (wrapped by ``ray.remote`` at run time; Ray is not imported here).

    ``__init__`` moves into the shared project folder, takes the driver's forwarded environment
    (:data:`FORWARDED_ENV_PREFIXES`) and limits threads; ``stage.setup`` runs lazily
    on the first item (once per actor process, cached by :func:`pipeline.core.work.resource_for`), so a
    failing setup comes back as a fatal outcome exactly like on the local pool.
    """

    def __init__(
        self, stage: Stage[Any], workdir: str, threads: int, modules: Sequence[str], env: dict[str, str]
    ) -> None:
        from pipeline.core.work import limit_threads

        if not os.path.isdir(workdir):
            raise FileNotFoundError(
                f"project folder {workdir} does not exist on Ray node {socket.gethostname()}: mount the shared "
                f"storage at the same path on every node, or set {WORKDIR_ENV}"
            )
        os.chdir(workdir)
        os.environ.update(env)
        limit_threads(threads)
        self.stage = stage
        self.digest = code_digest(modules)

    def ready(self) -> dict[str, Any]:
        """Who and where this actor is, and the digest of the code it runs."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(), "code": self.digest}

    def run(self, works: list[WorkItem]) -> list[ItemOutcome]:
        """Compute ``works`` in order (each one writes its own outputs and state)."""
        return [execute_item(self.stage, w) for w in works]


@dataclass
class _Slot:
    """An actor of the pool and the chunks it has in flight (oldest first)."""

    index: int
    handle: Any
    inflight: deque[tuple[Any, list[WorkItem]]] = field(default_factory=deque)
    alive: bool = True


def pool_size(runner: RunnerParams, resources: dict[str, float], n_chunks: int, num_gpus: float) -> int:
    """How many actors to start: ``runner.workers`` (0 = as many as the cluster's CPUs, or GPUs for a GPU
    stage, allow), capped at what the cluster offers now (more would wait forever for resources) and at
    the number of chunks of work."""
    rp = runner.ray
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    capacity = math.floor(cpus / rp.num_cpus_per_task + 1e-9) if rp.num_cpus_per_task > 0 else max(int(cpus), 1)
    if num_gpus > 0:
        capacity = min(capacity, math.floor(gpus / num_gpus + 1e-9))
    if capacity < 1:
        raise ConfigError(
            f"the Ray cluster offers {cpus:g} CPUs and {gpus:g} GPUs, not enough for one worker asking for "
            f"{rp.num_cpus_per_task:g} CPUs and {num_gpus:g} GPUs (runner.ray.num_cpus_per_task / num_gpus_per_task)"
        )
    target = runner.workers or capacity
    if target > capacity:
        log.warning(
            "runner.workers=%d but the Ray cluster has room for %d workers (%g CPUs, %g GPUs); using %d",
            target, capacity, cpus, gpus, capacity,
        )
        target = capacity
    return max(1, min(target, n_chunks))


def gpus_per_actor(stage: Stage[Any], rp: RayParams, cluster_gpus: float) -> float:
    """GPUs each actor asks for: ``num_gpus_per_task`` (1 when left at 0) for a GPU stage on a cluster
    that has GPUs; 0 for CPU stages and on clusters without GPUs (the stage then runs on CPU)."""
    if not stage.gpu:
        return 0.0
    if cluster_gpus <= 0:
        log.warning("%s: GPU stage but the Ray cluster has no GPUs; its workers run on CPU", stage.name)
        return 0.0
    return rp.num_gpus_per_task if rp.num_gpus_per_task > 0 else 1.0


def connect(rp: RayParams) -> bool:
    """Connect this process to the Ray cluster at ``rp.address`` unless already connected.

    ``auto`` finds the cluster this node belongs to (``ray start`` / ``RAY_ADDRESS``); ``local`` starts a
    one-machine cluster for this run; ``HOST:PORT`` or ``ray://HOST:PORT`` name a cluster. Returns True
    when this call connected (the caller then disconnects).
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "runner.executor is 'ray' but Ray is not installed: pip install 'maskloop[ray]' "
            "(on the driver and every cluster node)"
        ) from exc
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if rp.address == "local":
        kwargs["include_dashboard"] = False
        address: str | None = "local"
    else:
        address = rp.address
    _check_reachable(rp.address)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at runner.ray.address={rp.address!r} ({exc}); start one with "
            "`ray start --head`, set RAY_ADDRESS, or use address 'local' for a one-machine cluster; a cluster started "
            "with token authentication (the default of `ray start`) also needs RAY_AUTH_MODE=token and its token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token) on this machine"
        ) from exc
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on (``ray.init`` would retry for minutes)."""
    if address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except ValueError:
        raise ConfigError(f"runner.ray.address={address!r} is not HOST:PORT, 'auto', 'local' or ray://HOST:PORT") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at runner.ray.address={address!r} ({exc.strerror or exc}); start one with "
            "`ray start --head`, or fix the address (the head's GCS port, 6379 by default)"
        ) from None


class RayExecutor:
    """:class:`pipeline.core.runner.Executor` on a Ray actor pool (see the module docstring)."""

    def __init__(self, runner: RunnerParams) -> None:
        self.runner = runner
        self.params = runner.ray
        self.pids: list[int] = []  # pids of the actors of the current/last run (tests, diagnostics)

    def run(self, stage: Stage[Any], works: Sequence[WorkItem]) -> Iterator[ItemOutcome]:
        if not works:
            return
        started = connect(self.params)  # first: names the missing extra when Ray is not installed
        import ray

        slots: list[_Slot] = []
        try:
            yield from self._run(ray, stage, list(works), slots)
        finally:
            for slot in slots:
                try:
                    ray.kill(slot.handle, no_restart=True)
                except Exception as exc:  # an already-dead actor; nothing to clean
                    log.debug("%s: could not kill actor %d: %s", stage.name, slot.index, exc)
            if started:
                ray.shutdown()

    # ---------------------------------------------------------------- internals

    def _run(self, ray: Any, stage: Stage[Any], works: list[WorkItem], slots: list[_Slot]) -> Iterator[ItemOutcome]:
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        rp = self.params
        chunk = max(1, self.runner.chunksize)
        queue: deque[list[WorkItem]] = deque(works[i : i + chunk] for i in range(0, len(works), chunk))
        resources = ray.cluster_resources()
        num_gpus = gpus_per_actor(stage, rp, float(resources.get("GPU", 0.0)))
        n_actors = pool_size(self.runner, resources, len(queue), num_gpus)
        workdir = os.environ.get(WORKDIR_ENV) or os.getcwd()
        modules = stage_modules(stage)
        expected = code_digest(modules)
        threads = max(1, int(rp.num_cpus_per_task))
        env = forwarded_env(os.environ)
        actor_cls = ray.remote(StageActor).options(
            num_cpus=rp.num_cpus_per_task,
            num_gpus=num_gpus,
            max_restarts=rp.max_retries,
            max_task_retries=rp.max_retries,
        )

        def start(index: int) -> _Slot:
            return _Slot(index, actor_cls.remote(stage, workdir, threads, modules, env))

        log.info(
            "%s: %d items on %d Ray workers (%g CPU, %g GPU each, %d retries)",
            stage.name, len(works), n_actors, rp.num_cpus_per_task, num_gpus, rp.max_retries,
        )
        slots.extend(start(i) for i in range(n_actors))
        self._check_ready(ray, stage, slots, expected, GetTimeoutError, RayActorError)
        replacements = n_actors  # a pool may lose each actor's restart budget once before giving up

        pending: dict[Any, _Slot] = {}

        def feed(slot: _Slot) -> None:
            while slot.alive and queue and len(slot.inflight) < DEPTH:
                part = queue.popleft()
                ref = slot.handle.run.remote(part)
                slot.inflight.append((ref, part))
                pending[ref] = slot

        for slot in slots:
            feed(slot)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            slot = pending.pop(ref)
            if not slot.alive:
                continue
            try:
                outcomes: list[ItemOutcome] = ray.get(ref)
            except RayActorError as exc:
                # Ray already restarted the actor and retried its calls max_retries times: the oldest call
                # (the one running when it died) is given up on; the others go back to the queue.
                slot.alive = False
                lost = list(slot.inflight)
                slot.inflight.clear()
                for other_ref, _part in lost:
                    pending.pop(other_ref, None)
                (_bad_ref, bad), rest = lost[0], lost[1:]
                for _r, part in reversed(rest):
                    queue.appendleft(part)
                reason = _first_line(exc)
                log.warning("%s: a Ray worker died %d time(s) on %s: %s", stage.name, rp.max_retries + 1,
                            ", ".join(w.key for w in bad), reason)
                for w in bad:
                    yield ItemOutcome(w.key, "failed", f"worker process died {rp.max_retries + 1} time(s) on this "
                                      f"item (runner.ray.max_retries={rp.max_retries}): {reason}", 0.0, True)
                if queue and replacements > 0:
                    replacements -= 1
                    new = start(len(slots))
                    slots.append(new)
                    feed(new)
                elif queue and not any(s.alive for s in slots):
                    while queue:
                        for w in queue.popleft():
                            yield ItemOutcome(w.key, "failed", "no Ray worker left to compute this item (every "
                                              "worker of the pool died)", 0.0, False)
                for s in slots:
                    feed(s)
                continue
            except RayTaskError as exc:
                # The call raised outside ``process`` (which execute_item turns into failed items), e.g. a
                # work item that cannot be unpickled on the worker: its items fail, the rest go on.
                part = _pop_call(slot, ref)
                reason = _first_line(exc)
                for w in part:
                    yield ItemOutcome(w.key, "failed", f"Ray worker error: {reason}", 0.0, True)
                feed(slot)
                continue
            _pop_call(slot, ref)
            yield from outcomes
            feed(slot)

    def _check_ready(
        self, ray: Any, stage: Stage[Any], slots: list[_Slot], expected: str,
        timeout_exc: type[BaseException], actor_exc: type[BaseException],
    ) -> None:
        refs = [s.handle.ready.remote() for s in slots]
        try:
            infos: list[dict[str, Any]] = ray.get(refs, timeout=STARTUP_TIMEOUT_S)
        except timeout_exc:
            raise ConfigError(
                f"{stage.name}: the Ray cluster did not start {len(slots)} workers within {STARTUP_TIMEOUT_S:g} s "
                f"(each asks for {self.params.num_cpus_per_task:g} CPUs; check `ray status`)"
            ) from None
        except actor_exc as exc:
            raise ConfigError(f"{stage.name}: a Ray worker could not start: {_first_line(exc)}") from exc
        self.pids = [int(i["pid"]) for i in infos]
        for info in infos:
            if info["code"] != expected:
                raise ConfigError(
                    f"{stage.name}: Ray worker on {info['host']} runs different maskloop code than this driver "
                    "(install the same maskloop version on every node, e.g. the same editable checkout on the "
                    "shared storage)"
                )
        hosts = sorted({str(i["host"]) for i in infos})
        log.debug("%s: Ray workers ready on %s (pids %s)", stage.name, ", ".join(hosts), self.pids)


def _pop_call(slot: _Slot, ref: Any) -> list[WorkItem]:
    """Remove the call ``ref`` from ``slot``'s in-flight list; returns its work items."""
    for i, (r, part) in enumerate(slot.inflight):
        if r == ref:
            del slot.inflight[i]
            return part
    raise RuntimeError(f"Ray actor {slot.index}: result of an unknown call")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """The line of a Ray error that says what went wrong: the innermost ``Type: message`` line of a
    remote traceback when there is one, else the first line (colour codes removed, at most 300 chars)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b: ", ln)]
    pick = causes[-1] if causes else (lines[0] if lines else type(exc).__name__)
    return pick[:300]
