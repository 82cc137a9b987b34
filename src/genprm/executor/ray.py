"""Run genprm's long commands on a Ray cluster: one actor per engine replica, the driver the one writer.

* :class:`ReplicaPool` starts ``replicas`` actors (:class:`~genprm.executor.replica.Replica`), each
  holding its own engines (vLLM on ``gpus_per_replica`` GPUs, tensor parallel above one; llama.cpp
  or an OpenAI-compatible client on CPUs) and sandbox pool, loaded from picklable
  :class:`~genprm.executor.RoleSpec` where the actor runs. Ray restarts a dead actor up to
  ``max_restarts`` times.
* :class:`RayExecutor` is the :class:`~genprm.executor.Executor` over a pool: it hands out units,
  keeps at most ``max_in_flight`` on each replica (whose threads run them through genprm's own
  scheduler, so its engine batch stays full), and yields outcomes as they finish. Results travel
  through Ray: workers need no shared file system, and only the driver writes the store.
* Faults: a unit whose replica died is handed out again (to any live replica); after
  ``unit_attempts`` deaths it comes back as a failed outcome (recorded, not retried forever). A
  replica that failed is probed and gets no units until it answers again; one whose restarts are
  used up is dropped. A unit finished twice is delivered once. A driver killed with ``kill -9``
  takes its actors with it, and the next run resumes from the store like a local one.
* :class:`ReplicaEngine` is the driver's view of a role's model on the replicas: its identity (model
  id, chat template: what store keys and prompts are made of) and engine calls sent to replicas, a
  batch spread over them (the critic baseline, refine's policy answers).

Ray is an extra (``pip install 'genprm[ray]'``); without it every entry point raises
:class:`~genprm.errors.MissingDependencyError`.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

from genprm.engines.base import Engine, Generation, GenerationRequest, LogprobRequest, TokenLogprobs
from genprm.errors import ConfigError, GenPRMError, MissingDependencyError
from genprm.executor.base import Executor, Outcome, R, Resources, U, UnitRun, Work
from genprm.executor.replica import EngineIdentity, Replica, UnitResult
from genprm.executor.roles import RoleSpec

if TYPE_CHECKING:
    from genprm.evaluation.chat import ChatModel

LOCAL = "local"
"""``--ray local``: start a private Ray instance on this machine for one command."""
AUTO = "auto"
"""``--ray auto``: the cluster in ``RAY_ADDRESS``, else the one ``ray start`` left on this machine."""


def require_ray() -> Any:
    """The ``ray`` module, or the error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    return ray


class ReplicasLostError(GenPRMError):
    """No replica is left to run units on (their restarts are used up, or none could be placed)."""


@dataclass(frozen=True)
class ReplicaSettings:
    """How many replicas, what each asks of the cluster, and how faults are handled."""

    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    max_restarts: int = 3
    """Times Ray restarts a replica that died (its engines load again on first use)."""
    unit_attempts: int = 3
    """Deaths of the replica running a unit after which the unit is a failed outcome."""
    max_concurrency: int = 64
    """Calls one actor runs at once on its threads: units in flight plus engine calls and probes."""
    placement_timeout_s: float = 600.0
    """How long to wait for replicas to be placed (or for a failed one to come back) before giving up."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("--replicas", self.replicas, "must be at least 1")
        if self.gpus_per_replica < 0:
            raise ConfigError("--gpus-per-replica", self.gpus_per_replica, "must be 0 or more")
        if self.gpus_per_replica > 1 and self.gpus_per_replica != int(self.gpus_per_replica):
            raise ConfigError("--gpus-per-replica", self.gpus_per_replica, "above 1 it must be whole (tensor parallel)")
        if self.cpus_per_replica <= 0:
            raise ConfigError("cpus_per_replica", self.cpus_per_replica, "must be above 0")
        if self.unit_attempts < 1 or self.max_restarts < 0 or self.max_concurrency < 2:
            raise ConfigError("replica settings", self,
                              "need unit_attempts >= 1, max_restarts >= 0, max_concurrency >= 2")


def ray_token_exists() -> bool:
    """Whether ``ray start`` on this machine turns token authentication on (it does when this file exists)."""
    return (Path.home() / ".ray" / "auth_token").is_file()


def connect(address: str) -> bool:
    """Join Ray at ``address`` unless this process already has; True when this call started Ray
    (the caller shuts it down). ``local`` starts a private instance; ``auto``, ``HOST:PORT`` and
    ``ray://HOST:PORT`` join a running cluster.
    """
    if address != LOCAL and "ray" not in sys.modules and "RAY_AUTH_MODE" not in os.environ and ray_token_exists():
        # Ray 2.60 sends the token to a cluster named by an address (given, or in RAY_ADDRESS) only
        # when told, and it reads the setting once, when it is imported: so tell it before that.
        os.environ["RAY_AUTH_MODE"] = "token"
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        if address == LOCAL:
            ray.init(address=LOCAL, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigError("--ray", address, f"no Ray cluster there ({' '.join(str(exc).split())}); start one "
                          "with `ray start --head`, or give --ray local for one on this machine") from None
    return True


def portable(spec: RoleSpec, settings: ReplicaSettings) -> RoleSpec:
    """``spec`` as a replica loads it: a model path that exists here made absolute (an actor's working
    folder is not the driver's; on several nodes the path must exist on each), and vLLM told to split
    the model over a replica's GPUs when it has more than one.
    """
    model = spec.model
    local = Path(model).expanduser()
    if local.exists():
        model = str(local.resolve())
    options = dict(spec.options)
    if spec.engine == "vllm" and settings.gpus_per_replica > 1:
        options.setdefault("tensor_parallel_size", int(settings.gpus_per_replica))
        options.setdefault("distributed_executor_backend", "mp")  # inside the actor, on its own GPUs
    return replace(spec, model=model, options=tuple(sorted(options.items())))


class ReplicaPool(Resources):
    """The replica actors and what the driver knows of them (placement, health, engine identities).

    As :class:`~genprm.executor.Resources` on the driver, ``chat(role)`` is a chat model over a
    :class:`ReplicaEngine`, so driver-side code written for a local engine runs unchanged.
    """

    def __init__(
        self, specs: Mapping[str, RoleSpec], settings: ReplicaSettings | None = None, *, address: str | None = None
    ) -> None:
        super().__init__()
        self._started_ray = connect(address or AUTO)  # before Ray is imported here: see connect()
        self.ray = require_ray()
        self.settings = settings or ReplicaSettings()
        self.specs = {role: portable(spec, self.settings) for role, spec in specs.items()}
        self._check_fits()
        s = self.settings
        actor = self.ray.remote(Replica).options(
            num_cpus=s.cpus_per_replica, num_gpus=s.gpus_per_replica, max_restarts=s.max_restarts,
            max_task_retries=0, max_concurrency=s.max_concurrency, scheduling_strategy="SPREAD",
        )
        self.actors: list[Any] = [actor.remote(self.specs) for _ in range(s.replicas)]
        self._health = ["ok"] * len(self.actors)
        self._probes: dict[Any, int] = {}
        self._engines: dict[str, ReplicaEngine] = {}
        self._closed = False
        try:
            self.places = self._await(lambda a: a.ready.remote(), "start", self.settings.placement_timeout_s)
        except BaseException:
            self.close()
            raise

    # -- placement and health ----------------------------------------------------------------------

    def _check_fits(self) -> None:
        have = self.ray.cluster_resources()
        s = self.settings
        for name, each in (("CPU", s.cpus_per_replica), ("GPU", s.gpus_per_replica)):
            need = each * s.replicas
            if need > have.get(name, 0):
                raise ConfigError("--replicas", s.replicas, f"{s.replicas} replica(s) x {each:g} {name} need "
                                  f"{need:g} {name}s; the cluster has {have.get(name, 0):g}")

    def _await(self, call: Any, what: str, timeout: float | None = None) -> list[Any]:
        """``call(actor)`` on every replica, waited for (at most ``timeout`` seconds)."""
        refs = [call(actor) for actor in self.actors]
        exceptions = self.ray.exceptions
        try:
            return [_value(self.ray, ref, timeout) for ref in refs]
        except exceptions.GetTimeoutError:
            raise ReplicasLostError(f"the replicas did not {what} within {timeout:g} s (the cluster has "
                                    f"{self.ray.cluster_resources()})") from None
        except exceptions.RayActorError as exc:
            raise ReplicasLostError(f"a replica could not {what}: {_first_line(exc)}") from None

    def healthy(self) -> list[int]:
        """Replicas that take units now."""
        return [i for i, state in enumerate(self._health) if state == "ok"]

    def alive(self) -> bool:
        return any(state != "dead" for state in self._health)

    def suspect(self, index: int) -> None:
        """A call on replica ``index`` failed: give it no units until a probe answers."""
        if self._health[index] == "ok":
            self._health[index] = "suspect"
            self._probes[self.actors[index].ready.remote()] = index

    def probes(self) -> list[Any]:
        return list(self._probes)

    def settle(self, probe: Any) -> None:
        """Read a finished probe: the replica is back, restarting still (probe again), or dead."""
        index = self._probes.pop(probe)
        exceptions = self.ray.exceptions
        try:
            self.ray.get(probe)
        except exceptions.ActorDiedError:
            self._health[index] = "dead"  # its restarts are used up
        except exceptions.RayError:
            self._probes[self.actors[index].ready.remote()] = index
        else:
            self._health[index] = "ok"

    def wait_for_health(self, deadline: float) -> None:
        """Block until some replica takes units again; :class:`ReplicasLostError` if none will."""
        while not self.healthy():
            if not self.alive() or not self._probes:
                raise ReplicasLostError("every replica died and none can be restarted; what finished is stored: "
                                        "run the command again to resume")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplicasLostError(f"no replica answered for {self.settings.placement_timeout_s:g} s")
            ready, _ = self.ray.wait(self.probes(), num_returns=1, timeout=min(left, 5.0))
            for probe in ready:
                self.settle(probe)

    # -- the driver's resources ------------------------------------------------------------------

    def identity(self, role: str) -> EngineIdentity:
        """``role``'s engine as the replicas loaded it (every replica loads it now)."""
        found = self._engines.get(role)
        if found is not None:
            return found.identity
        if role not in self.specs:
            raise LookupError(f"no model plays '{role}' on the replicas (roles: {', '.join(self.specs)})")
        identities: list[EngineIdentity] = self._await(lambda a: a.describe.remote(role), f"load the {role} model")
        models = sorted({i.model_id for i in identities})
        if len(models) > 1:
            raise ConfigError("--model", self.specs[role].model, f"the replicas loaded different models: {models}")
        self._engines[role] = ReplicaEngine(self, role, identities[0])
        return identities[0]

    def engine(self, role: str) -> ReplicaEngine:
        self.identity(role)
        return self._engines[role]

    def chat(self, role: str) -> ChatModel:
        from genprm.evaluation.chat import ChatModel

        return ChatModel(self.engine(role), self.specs[role].chat_template)

    def executor(self, max_in_flight: int) -> RayExecutor:
        """An executor over these replicas with ``max_in_flight`` units on each."""
        return RayExecutor(self, max_in_flight)

    def call_many(self, role: str, method: str, arguments: Sequence[Any]) -> list[Any]:
        """``method(argument)`` on ``role``'s engine for each argument, spread over the healthy replicas;
        a call whose replica dies is sent to another (up to ``unit_attempts`` times).
        """
        deadline = time.monotonic() + self.settings.placement_timeout_s
        results: list[Any] = [None] * len(arguments)
        todo = deque((i, 0) for i in range(len(arguments)))
        cursor = itertools.count()
        while todo:
            self.wait_for_health(deadline)
            healthy = self.healthy()
            sent = []
            while todo:
                i, tries = todo.popleft()
                index = healthy[next(cursor) % len(healthy)]
                sent.append((i, tries, index, self.actors[index].call.remote(role, method, arguments[i])))
            for i, tries, index, ref in sent:
                try:
                    results[i] = _value(self.ray, ref)
                except self.ray.exceptions.RayActorError as exc:
                    self.suspect(index)
                    if tries + 1 >= self.settings.unit_attempts:
                        raise ReplicasLostError(f"{method} failed {tries + 1} times: {_first_line(exc)}") from None
                    todo.append((i, tries + 1))
        return results

    def close(self) -> None:
        """Stop the replicas (and Ray, when this pool started it); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        super().close()
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        if self._started_ray:
            self.ray.shutdown()

    def __enter__(self) -> ReplicaPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _value(ray: Any, ref: Any, timeout: float | None = None) -> Any:
    """``ray.get``, with a genprm error raised inside a replica re-raised here as itself."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, GenPRMError):
            raise cause from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- the executor ------------------------------------------------------------------------------------


class RayExecutor(Executor):
    """Units on the pool's replicas, at most ``max_in_flight`` on each (see the module docstring)."""

    def __init__(self, pool: ReplicaPool, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ConfigError("max_in_flight", max_in_flight, "must be at least 1")
        if max_in_flight >= pool.settings.max_concurrency:
            raise ConfigError("max_in_flight", max_in_flight,
                              f"must stay below the replicas' max_concurrency ({pool.settings.max_concurrency})")
        self.pool = pool
        self.max_in_flight = max_in_flight

    def run(self, work: Work[U, R], units: Iterable[U] = (), resources: Resources | None = None) -> UnitRun[U, R]:
        return _RayRun(self.pool, work, units, self.max_in_flight)


@dataclass
class _Task(Generic[U]):
    id: int
    unit: U
    deaths: int = 0
    last_error: str = ""


class Ledger:
    """Which units were handed out and which finished, so a unit finished twice is delivered once."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._finished: set[int] = set()

    def issue(self) -> int:
        return next(self._ids)

    def finish(self, unit_id: int) -> bool:
        """Record ``unit_id`` as finished; False if it already was (drop the duplicate)."""
        if unit_id in self._finished:
            return False
        self._finished.add(unit_id)
        return True


class _RayRun(UnitRun[U, R], Generic[U, R]):
    def __init__(self, pool: ReplicaPool, work: Work[U, R], units: Iterable[U], bound: int) -> None:
        self._pool = pool
        self._work = work
        self._initial = iter(units)
        self._again: deque[_Task[U]] = deque()
        self._follow_ups: deque[_Task[U]] = deque()
        self._bound = bound
        self._ledger = Ledger()
        self.resubmitted = 0
        """Units handed out again after their replica died (for tests and reports)."""

    def submit(self, unit: U) -> None:
        self._follow_ups.append(_Task(self._ledger.issue(), unit))

    def _next(self) -> _Task[U] | None:
        if self._again:
            return self._again.popleft()
        if self._follow_ups:
            return self._follow_ups.popleft()
        for unit in self._initial:
            return _Task(self._ledger.issue(), unit)
        return None

    def __iter__(self) -> Iterator[Outcome[U, R]]:
        pool, ray = self._pool, self._pool.ray
        work = ray.put(self._work)
        running: dict[Any, tuple[_Task[U], int]] = {}
        load = [0] * len(pool.actors)
        exhausted = False
        try:
            while True:
                exhausted = self._fill(work, running, load) or exhausted
                if not running:
                    if exhausted and not (self._again or self._follow_ups):
                        return
                    pool.wait_for_health(time.monotonic() + pool.settings.placement_timeout_s)
                    continue
                ready, _ = ray.wait(list(running) + pool.probes(), num_returns=1)
                for ref in ready:
                    if ref not in running:
                        pool.settle(ref)
                        continue
                    task, index = running.pop(ref)
                    load[index] -= 1
                    outcome = self._collect(ref, task, index)
                    if outcome is not None:
                        yield outcome
        finally:
            for ref in running:  # stopped early: what still runs is dropped (a resumable stage recomputes it)
                try:
                    ray.cancel(ref)
                except Exception:
                    pass

    def _fill(self, work: Any, running: dict[Any, tuple[_Task[U], int]], load: list[int]) -> bool:
        """Hand out units while a healthy replica has a free slot; True once the initial units ran out."""
        pool = self._pool
        while True:
            free = [i for i in pool.healthy() if load[i] < self._bound]
            if not free:
                return False
            task = self._next()
            if task is None:
                return True
            index = min(free, key=lambda i: (load[i], i))
            running[pool.actors[index].run.remote(work, task.unit)] = (task, index)
            load[index] += 1

    def _collect(self, ref: Any, task: _Task[U], index: int) -> Outcome[U, R] | None:
        """The outcome of a finished call; ``None`` when the unit goes out again (or was delivered before)."""
        ray = self._pool.ray
        try:
            result: UnitResult = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.RayActorError):
                self._pool.suspect(index)
            task.deaths += 1
            task.last_error = _first_line(exc)
            if task.deaths >= self._pool.settings.unit_attempts:
                error = f"ReplicaLostError: the replica running it failed {task.deaths} times (last: {task.last_error})"
                return Outcome(task.unit, None, error) if self._ledger.finish(task.id) else None
            self.resubmitted += 1
            self._again.append(task)
            return None
        if not self._ledger.finish(task.id):
            return None
        return Outcome(task.unit, result.value, result.error, result.seconds)


# -- the driver's engine proxy -------------------------------------------------------------------------


def spread(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into at most ``parts`` contiguous, nearly equal groups (none empty), in order."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    groups, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        groups.append(list(items[start:end]))
        start = end
    return [g for g in groups if g]


class ReplicaEngine(Engine):
    """One role's model on the replicas, seen from the driver. Identity (model id, chat template,
    special tokens) comes from the replicas, so store keys and prompts are a local run's; a batch of
    requests is spread over the healthy replicas and comes back in order. ``max_batch`` is the
    replicas' together, so batching callers (the critic, refine's policy) keep all of them busy.
    """

    def __init__(self, pool: ReplicaPool, role: str, identity: EngineIdentity) -> None:
        super().__init__()
        self.pool = pool
        self.role = role
        self.identity = identity
        self.name = identity.name
        self.per_replica_batch = max(1, identity.max_batch)
        self.max_batch = self.per_replica_batch * len(pool.actors)
        self.shares_sample_prompt = identity.shares_sample_prompt

    def _spread(self, method: str, items: Sequence[Any]) -> list[Any]:
        if not items:
            return []
        groups = spread(items, len(self.pool.healthy()) or 1)
        return [out for group in self.pool.call_many(self.role, method, groups) for out in group]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return self._spread("generate", requests)

    def sample(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        return self._spread("sample", requests)

    def next_token_logprobs(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        return self._spread("next_token_logprobs", requests)

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self.pool.call_many(self.role, "tokenize", [text])[0]
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        text: str = self.pool.call_many(self.role, "detokenize", [list(tokens)])[0]
        return text

    @property
    def chat_template(self) -> str | None:
        return self.identity.chat_template

    @property
    def special_tokens(self) -> dict[str, str]:
        return dict(self.identity.special_tokens)

    @property
    def model_id(self) -> str:
        return self.identity.model_id


def replica_units(chat: ChatModel) -> int:
    """The batch one replica of ``chat``'s engine takes (its own engine's, not the pool's together)."""
    engine = chat.engine
    return engine.per_replica_batch if isinstance(engine, ReplicaEngine) else engine.max_batch
