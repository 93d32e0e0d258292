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

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from bias_detector import AttributeCheck, IndividualBiasCheck
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
    is what makes a run resumable and repeatable.
    """
    rows = [row for customer_id in customer_ids
            for row in answer_rows(service.recommend(customer_id, top_k, include_explanation=False))]
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

class ScoringEngine(Protocol):
    """Where chunks are scored. Yields each chunk's table once it is scored, in any order."""

    def score(self, chunks: Sequence[Chunk], top_k: int) -> Iterator[tuple[Chunk, pa.Table]]: ...


class LocalEngine:
    """In this process, one chunk after the other: the default, nothing to start."""

    def __init__(self, service: RecommendationService) -> None:
        self.service = service

    def score(self, chunks: Sequence[Chunk], top_k: int) -> Iterator[tuple[Chunk, pa.Table]]:
        for chunk in chunks:
            yield chunk, score_chunk(self.service, chunk_customers(self.service, chunk), top_k)


def ray_engine(service: RecommendationService) -> ScoringEngine:
    """The Ray engine (``ray_engine.py``), imported only when chosen: the service and the local
    engine never load Ray."""
    from ray_engine import RayEngine

    return RayEngine(service)


ENGINES: dict[str, Callable[[RecommendationService], ScoringEngine]] = {"local": LocalEngine, "ray": ray_engine}


# ---------------------------------------------------------------------------------------- one run on disk

@dataclass(frozen=True)
class RunIdentity:
    """What the answers of a run depend on: parts are resumed only under the same identity."""

    model_version: str
    trained_at: str
    data_fingerprint: str
    rules_digest: str
    bias_tolerance: float
    customers: int
    top_k: int
    chunk_size: int

    @classmethod
    def of(cls, service: RecommendationService, top_k: int, chunk_size: int) -> RunIdentity:
        rules = hashlib.blake2b(service.settings.rules_file.read_bytes(), digest_size=12).hexdigest()
        return cls(service.model.version_, service.artifacts.trained_at, service.artifacts.fingerprint, rules,
                   service.settings.bias_tolerance, len(service.base.view), top_k, chunk_size)

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """``name: recorded -> now`` for every field that changed since the parts were written."""
        return [f"{field.name}: {recorded.get(field.name)!r} -> {getattr(self, field.name)!r}"
                for field in fields(self) if recorded.get(field.name) != getattr(self, field.name)]


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
        _write_atomically(self.path / MANIFEST, lambda temporary: temporary.write_text(json.dumps(asdict(identity))))
        return set()

    def commit(self, chunk: Chunk, table: pa.Table) -> None:
        _write_atomically(self._part(chunk.index), lambda temporary: pq.write_table(table, temporary))

    def combine(self, chunks: Sequence[Chunk]) -> None:
        """The final file: every part in order, one row group each; then the parts go."""
        def write(temporary: Path) -> None:
            with pq.ParquetWriter(temporary, ANSWER_SCHEMA) as writer:
                for chunk in chunks:
                    table = pq.read_table(self._part(chunk.index))
                    writer.write_table(table, row_group_size=table.num_rows)

        _write_atomically(self.out, write)
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


def _write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
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
    scored = sum(chunk.size for chunk in pending)
    reporter = progress(len(service.base.view), len(service.base.view) - scored)
    started = time.perf_counter()
    try:
        for chunk, table in ENGINES[engine](service).score(pending, top_k):
            parts.commit(chunk, table)
            reporter.advance(chunk)
    finally:
        reporter.close()
    seconds = time.perf_counter() - started
    parts.combine(chunks)
    return ScoreSummary(str(out), engine, len(service.base.view), pq.ParquetFile(out).metadata.num_rows, len(chunks),
                        len(chunks) - len(pending), round(seconds, 2), round(scored / max(seconds, 1e-9), 1))
