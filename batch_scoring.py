"""Every known customer's answer, written to Parquet a chunk at a time (``cli.py score``).

Why part files, then one combine: a Parquet file is only readable once its footer is written, on
close, so a single file open for the whole run is lost when the run is killed, and a writer
cannot append to it afterwards. Each chunk is therefore written to its own part file in
``<out>.parts/`` and renamed into place once complete: a part that exists is a complete chunk,
which is all that resuming needs. When every chunk is there, the parts are copied in order into
the final file, one row group per chunk and one chunk in memory at a time, and the parts are
removed. The final file depends only on the answers, so a resumed run writes the same bytes as an
uninterrupted one.

The manifest beside the parts names the run they belong to (model, data, rules, top-k, chunk
size): parts of another run are never mixed in; a rerun that does not match refuses to resume,
and ``restart`` starts over.

Scoring a chunk is a pure function of the loaded service and the chunk (``score_chunk``); an
engine only decides where chunks are scored and hands their tables back: ``local`` in this
process, ``ray`` as Ray tasks (``ray_engine.py``, imported only when chosen). Writing, resuming and
progress stay here, in the driver, whatever the engine, so every engine writes the same file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, Self, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from settings import Settings

if TYPE_CHECKING:  # the service's modules load the text models: imported when a run starts, not with the CLI
    from artifacts import Artifacts
    from bias_detector import AttributeCheck, IndividualBiasCheck
    from business_rules import RuleBook
    from data_loader import BankData
    from recommendation_service import Recommendation, RecommendationService

logger = logging.getLogger(__name__)

ANSWER_SCHEMA = pa.schema([
    pa.field("customer_id", pa.string(), nullable=False),
    pa.field("rank", pa.int32()),  # rank, product and scores are empty for a customer with nothing to offer
    pa.field("product_id", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("adjusted_score", pa.float64()),
    pa.field("scored_by", pa.string()),
    pa.field("rules", pa.list_(pa.struct([("rule", pa.string()), ("effect", pa.string()), ("factor", pa.float64())]))),
    pa.field("bias_check_passed", pa.bool_(), nullable=False),
    pa.field("bias_worst_attribute", pa.string()),
    pa.field("bias_max_score_change", pa.float64()),
    pa.field("fallback_used", pa.bool_(), nullable=False),
    pa.field("fallback_degraded", pa.bool_(), nullable=False),
    pa.field("fallback_reasons", pa.list_(pa.string())),
    pa.field("model_version", pa.string(), nullable=False),
])
"""One row per product offered (customer-level columns repeated), so that a campaign list is a
filter; a customer with nothing to offer keeps one row with empty product columns, so that every
customer and their bias check appear."""

MANIFEST = "manifest.json"


class ResumeRefused(ValueError):
    """The parts on disk belong to another run (other models, data, rules or arguments)."""


# ---------------------------------------------------------------------------------------- the answers

@dataclass(frozen=True)
class Chunk:
    """Customers ``start`` to ``stop`` (rows of the customer base, in its order)."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_chunks(customers: int, chunk_size: int) -> list[Chunk]:
    """Consecutive chunks of ``chunk_size`` customers (the last one shorter)."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be 1 or more, not {chunk_size}")
    return [Chunk(index, start, min(start + chunk_size, customers))
            for index, start in enumerate(range(0, customers, chunk_size))]


def chunk_customers(service: RecommendationService, chunk: Chunk) -> list[str]:
    return [str(customer_id) for customer_id in service.base.view.index[chunk.start:chunk.stop]]


def score_chunk(service: RecommendationService, customer_ids: Sequence[str], top_k: int) -> pa.Table:
    """The answers of ``customer_ids`` as ``/recommend`` gives them, from the request's own code
    (``RecommendationService.recommend``), so that they are the same by construction.

    Two request options are fixed: no explanations (the file does not carry them, and they change
    nothing else in an answer) and no contact history (the answer to a customer the decision log
    has not contacted): the file then depends only on the data, the models and the rules, which
    is what makes a run resumable and repeatable. The customers' scores are computed together first,
    as the server computes its customers' at start-up.
    """
    scored = service.with_scores_of(np.array([service.customers.row_of(customer_id) for customer_id in customer_ids],
                                             dtype=np.intp))
    rows = [row for customer_id in customer_ids
            for row in answer_rows(scored.recommend(customer_id, top_k, include_explanation=False))]
    return pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA)


def answer_rows(answer: Recommendation) -> list[dict[str, Any]]:
    """One answer as rows of ``ANSWER_SCHEMA``. Rules keep their name, effect and factor, not their
    reason text, which is for people (the decision log keeps the same)."""
    worst = worst_attribute(answer.bias_check)
    customer = {"customer_id": answer.customer_id, "bias_check_passed": answer.bias_check.passed,
                "bias_worst_attribute": worst.attribute if worst else None,
                "bias_max_score_change": worst.max_score_change if worst else None,
                "fallback_used": answer.fallback.used, "fallback_degraded": answer.fallback.degraded,
                "fallback_reasons": list(answer.fallback.reasons), "model_version": answer.model_version}
    offers = [{"rank": item.rank, "product_id": item.product_id, "score": item.score,
               "adjusted_score": item.adjusted_score, "scored_by": item.scored_by,
               "rules": [{"rule": e.rule, "effect": e.effect, "factor": e.factor} for e in item.rules]}
              for item in answer.recommendations]
    return [{**customer, **offer} for offer in offers] or [customer]


def worst_attribute(check: IndividualBiasCheck) -> AttributeCheck | None:
    """The attribute to look at first: a failed one before a passed one, then the largest score change."""
    return max(check.attributes, key=lambda attribute: (not attribute.passed, attribute.max_score_change),
               default=None)


# ---------------------------------------------------------------------------------------- engines

Item = TypeVar("Item")
Result = TypeVar("Result")


class ScoringEngine(Protocol):
    """Where a run's tasks run: ``task(kit, item)`` for every item, each result yielded once it is
    ready, in any order. ``kit`` is what every task of the run reads (sent once per worker); the
    tasks are module-level functions, so that a remote worker imports them rather than receives them.
    Used as a context manager: what the engine starts for a run, it stops at the end."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *_: object) -> None: ...

    def map(self, task: Callable[[Any, Item], Result], kit: Any, items: Sequence[Item]
            ) -> Iterator[tuple[Item, Result]]: ...


class LocalEngine:
    """In this process, one task after the other: the default, nothing to start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        """Nothing was started."""

    def map(self, task: Callable[[Any, Item], Result], kit: Any, items: Sequence[Item]
            ) -> Iterator[tuple[Item, Result]]:
        for item in items:
            yield item, task(kit, item)


def ray_engine(settings: Settings) -> ScoringEngine:
    """The Ray engine (``ray_engine.py``), imported only when chosen: the service and the local
    engine never load Ray."""
    from ray_engine import RayEngine

    return RayEngine(settings)


ENGINES: dict[str, Callable[[Settings], ScoringEngine]] = {"local": LocalEngine, "ray": ray_engine}


def without_secrets(settings: Settings) -> Settings:
    """The settings a worker gets: no API keys, no database URL (workers never serve or log)."""
    return settings.model_copy(update={"api_keys": [], "database_url": None})


def answering_data(data: BankData) -> BankData:
    """The data a known customer's answer reads besides the serving state: the catalogue and the
    stated interests. The customers' rows, transactions, posts and holdings went into the serving
    state, so they stay behind (empty, with their columns)."""
    return dataclasses.replace(data, customers=data.customers.iloc[:0], transactions=data.transactions.iloc[:0],
                               social_posts=data.social_posts.iloc[:0], holdings=data.holdings.iloc[:0])


@dataclass
class LoadedBank:
    """The kit of a run over a bank loaded whole (one service): what answers its customers, without
    the training data (the serving state holds what answers read of it) nor the audit's held-out
    answers. The live service comes along in this process and is never pickled: a worker that
    receives the kit builds its own, once, on its first chunk."""

    settings: Settings
    data: BankData
    rules: RuleBook
    artifacts: Artifacts
    top_k: int
    live: RecommendationService | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, service: RecommendationService, top_k: int) -> LoadedBank:
        artifacts = dataclasses.replace(service.artifacts, holdout=service.artifacts.holdout.iloc[:0])
        return cls(without_secrets(service.settings), answering_data(service.data), service.rules, artifacts, top_k,
                   live=service)

    def service(self) -> RecommendationService:
        from recommendation_service import RecommendationService

        if self.live is None:
            self.live = RecommendationService(self.settings, self.data, self.rules, self.artifacts)
        return self.live

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "live": None}


def score_bank_chunk(kit: LoadedBank, chunk: Chunk) -> pa.Table:
    service = kit.service()
    return score_chunk(service, chunk_customers(service, chunk), kit.top_k)


# ---------------------------------------------------------------------------------------- one run on disk

@dataclass(frozen=True)
class RunIdentity:
    """What the answers of a run depend on: parts are resumed only under the same identity."""

    model_version: str
    trained_at: str
    data_fingerprint: str
    rules_digest: str
    bias_tolerance: float
    customers: int | None  # None: a sharded run, which counts its customers as it loads them
    top_k: int
    chunk_size: int | None  # None: a sharded run, whose chunks are its shards
    shards: int | None = None

    @classmethod
    def of(cls, service: RecommendationService, top_k: int, chunk_size: int) -> RunIdentity:
        return cls(service.model.version_, service.artifacts.trained_at, service.artifacts.fingerprint,
                   rules_digest(service.settings), service.settings.bias_tolerance, len(service.base.view), top_k,
                   chunk_size)

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """``name: recorded -> now`` for every field that changed since the parts were written."""
        return [f"{field.name}: {recorded.get(field.name)!r} -> {getattr(self, field.name)!r}"
                for field in fields(self) if recorded.get(field.name) != getattr(self, field.name)]


def rules_digest(settings: Settings) -> str:
    return hashlib.blake2b(settings.rules_file.read_bytes(), digest_size=12).hexdigest()


class PartsDirectory:
    """The complete chunks of an unfinished run, beside the final file, and their manifest."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out.with_name(out.name + ".parts")

    def open(self, identity: RunIdentity, restart: bool) -> set[int]:
        """The chunks already complete for this run (none when starting over); raises
        ``ResumeRefused`` when the parts on disk belong to another run and ``restart`` is not set."""
        if self.out.is_dir():
            raise ValueError(f"the output must be a file, and {self.out} is a directory")
        recorded = self._recorded_identity()
        if recorded is not None and not restart:
            differences = identity.differences(recorded)
            if not differences:
                return self._complete_chunks()
            raise ResumeRefused(f"{self.path} holds an unfinished run of other models, data or arguments "
                                f"({'; '.join(differences)}); run again with --restart to discard it and start over")
        self._clear()
        write_atomically(self.path / MANIFEST, lambda temporary: temporary.write_text(json.dumps(asdict(identity))))
        return set()

    def commit(self, chunk: Chunk, table: pa.Table) -> None:
        write_atomically(self._part(chunk.index), lambda temporary: pq.write_table(table, temporary))

    def combine(self, chunks: Sequence[Chunk]) -> None:
        """The final file: every part in order, one row group each; then the parts go."""
        def write(temporary: Path) -> None:
            with pq.ParquetWriter(temporary, ANSWER_SCHEMA) as writer:
                for chunk in chunks:
                    table = pq.read_table(self._part(chunk.index))
                    writer.write_table(table, row_group_size=table.num_rows)

        write_atomically(self.out, write)
        shutil.rmtree(self.path)

    def _clear(self) -> None:
        """An empty parts directory. One without a manifest is not a run's: it is never deleted."""
        if self.path.is_dir() and any(self.path.iterdir()) and not (self.path / MANIFEST).is_file():
            raise ValueError(f"{self.path} exists and is not the parts directory of a scoring run; move it away")
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)

    def _recorded_identity(self) -> dict[str, Any] | None:
        manifest = self.path / MANIFEST
        return json.loads(manifest.read_text()) if manifest.is_file() else None

    def _complete_chunks(self) -> set[int]:
        return {int(part.stem.removeprefix("part-")) for part in self.path.glob("part-*.parquet")}

    def _part(self, index: int) -> Path:
        return self.path / f"part-{index:06d}.parquet"


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Written beside and renamed into place: a file that exists is complete."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    temporary.replace(path)


# ---------------------------------------------------------------------------------------- progress

class ChunkProgress(Protocol):
    """Told of every chunk once it is safely on disk; also the hook to stop a run between chunks."""

    def advance(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


class BarProgress:
    """A tqdm bar, for a person watching a terminal."""

    def __init__(self, total: int, done: int, stream: IO[str]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="customer", file=stream, smoothing=0.1)

    def advance(self, chunk: Chunk) -> None:
        self.bar.update(chunk.size)

    def close(self) -> None:
        self.bar.close()


class LogProgress:
    """One structured log line per chunk, for logs that machines read (counts and rates only)."""

    def __init__(self, total: int, done: int) -> None:
        self.total = total
        self.done = done
        self.scored = 0
        self.started = time.perf_counter()

    def advance(self, chunk: Chunk) -> None:
        self.done += chunk.size
        self.scored += chunk.size
        rate = self.scored / max(time.perf_counter() - self.started, 1e-9)
        logger.info("chunk scored", extra={"chunk": chunk.index, "customers_done": self.done,
                                           "customers_total": self.total, "customers_per_second": round(rate, 1)})

    def close(self) -> None:
        """Nothing to release: every line is already out."""


def chunk_progress(total: int, done: int, stream: IO[str]) -> ChunkProgress:
    """A bar when a person watches ``stream`` (a terminal), log lines otherwise."""
    return BarProgress(total, done, stream) if stream.isatty() else LogProgress(total, done)


# ---------------------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class ScoreSummary:
    out: str
    engine: str
    customers: int
    rows: int
    chunks: int
    resumed_chunks: int
    seconds: float
    customers_per_second: float
    data_quality: dict[str, Any] | None = None
    """A run by shards: the loader's report of the whole bank (rows read and kept, what was dropped or
    repaired and why), summed over its shards. A bank loaded whole has it in the service's model card."""


def score_customers(service: RecommendationService, out: Path, top_k: int, chunk_size: int, engine: str,
                    restart: bool, progress: Callable[[int, int], ChunkProgress]) -> ScoreSummary:
    """Scores every known customer into ``out``, resuming from the complete chunks of an interrupted
    run of the same identity. ``progress(total, done)`` makes the progress reporter of this run."""
    if top_k < 1:
        raise ValueError(f"top-k must be 1 or more, not {top_k}")
    chunks = plan_chunks(len(service.base.view), chunk_size)
    parts = PartsDirectory(out)
    complete = parts.open(RunIdentity.of(service, top_k, chunk_size), restart)
    pending = [chunk for chunk in chunks if chunk.index not in complete]
    started = time.perf_counter()
    with ENGINES[engine](service.settings) as runner:
        commit_all(parts, runner.map(score_bank_chunk, LoadedBank.of(service, top_k), pending),
                   progress_of(progress, chunks, pending))
    return finish(parts, engine, chunks, pending, started)


def progress_of(progress: Callable[[int, int], ChunkProgress], chunks: Sequence[Chunk], pending: Sequence[Chunk]
                ) -> ChunkProgress:
    """The run's progress reporter, told how many customers the resumed chunks already hold."""
    total = sum(chunk.size for chunk in chunks)
    return progress(total, total - sum(chunk.size for chunk in pending))


def commit_all(parts: PartsDirectory, scored: Iterable[tuple[Chunk, pa.Table]], reporter: ChunkProgress) -> None:
    """Every chunk to its part file as it comes, then to the progress reporter, closed however the run ends."""
    try:
        for chunk, table in scored:
            parts.commit(chunk, table)
            reporter.advance(chunk)
    finally:
        reporter.close()


def finish(parts: PartsDirectory, engine: str, chunks: Sequence[Chunk], pending: Sequence[Chunk], started: float
           ) -> ScoreSummary:
    """The final file from the parts, and the run's figures (its rate over the chunks it scored)."""
    seconds = time.perf_counter() - started
    parts.combine(chunks)
    scored = sum(chunk.size for chunk in pending)
    return ScoreSummary(str(parts.out), engine, sum(chunk.size for chunk in chunks),
                        pq.ParquetFile(parts.out).metadata.num_rows, len(chunks), len(chunks) - len(pending),
                        round(seconds, 2), round(scored / max(seconds, 1e-9), 1))
