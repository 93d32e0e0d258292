"""A bank too large to load whole, scored shard by shard (``cli.py score --shards N``).

At 100,000 customers, the bank loaded whole with every customer's serving state takes 2-3 GB, and
training on it 4.4 GB: a million does not fit this way. Here the bank is split by customer into
shards (:mod:`data_shards`), and each shard is loaded, given its serving state and scored on its
own, so memory is bounded by a shard, not by the bank. The models are the saved ones, as they are,
whatever customers they were fitted on: a bank that large trains on a sample of its customers.

What is about the whole bank is gathered first, shard by shard, and handed to every shard's
scoring: its "now" (the day after its latest dated record), which customers are in which
protected group (a counterfactual moves a customer to the bank's groups, most frequent first) and
the analyses of its posts (each distinct text read once, see :func:`bank_analyses`). With those,
a customer's answer is the one the bank loaded whole gives (``tests/test_scoring_by_shards.py``).

The steps, each kept on disk until the run completes, so an interrupted run resumes: the split,
every shard loaded and cleaned (beside its files), every shard scored into a part file. Writing,
resuming and progress are :mod:`batch_scoring`'s, and so are the engines: the shards are tasks
here or on Ray. On a Ray cluster the workers read the shards from the run's parts directory, so it
must be on storage every node mounts (see the README).
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batch_scoring import (ENGINES, Chunk, ChunkProgress, PartsDirectory, RunIdentity, ScoreSummary, ScoringEngine,
                           commit_all, finish, progress_of, rules_digest, score_chunk, without_secrets,
                           write_atomically)
from settings import Settings

if TYPE_CHECKING:  # the service's modules load the text models: imported when a run starts, not with the CLI
    import pandas as pd

    from artifacts import Artifacts
    from business_rules import RuleBook
    from data_loader import BankData, DataQualityReport
    from recommendation_service import RecommendationService
    from text_models import PostAnalysis


@dataclass(frozen=True)
class ShardFacts:
    """What a loaded shard tells the run about the whole bank: its customers, its latest dated
    record (the bank's "now" is the day after the latest of all shards'), how many of its
    customers are in each protected group (the counterfactual groups are the whole bank's) and
    the distinct texts of its posts (read once for the whole bank, see :func:`bank_analyses`)."""

    customers: int
    latest: pd.Timestamp | None
    group_counts: dict[str, dict[str, int]]
    posts: list[str]
    quality: DataQualityReport  # what the loader dropped and repaired in the shard, summed over the bank by the run


SHARD_DATA = "data.joblib"
SHARD_FACTS = "facts.joblib"


def prepare_shard(settings: Settings, directory: Path) -> ShardFacts:
    """Loads and cleans one shard's data files once, keeping the result beside them for its
    scoring (and for a resumed run, which reads the facts again without loading)."""
    import joblib

    from artifacts import load_data
    from bias_detector import group_counts
    from data_loader import customer_view, latest_record

    if (directory / SHARD_FACTS).is_file():
        return joblib.load(directory / SHARD_FACTS)
    data = load_data(settings.model_copy(update={"data_dir": directory}), log_report=False)
    view = customer_view(data)
    facts = ShardFacts(len(view), latest_record(data),
                       {a.name: group_counts(view, a) for a in settings.protected_attributes},
                       sorted(set(data.social_posts["content"].fillna("").astype(str))),
                       dataclasses.replace(data.quality, matched_evidence=[], unmatched_evidence=[]))
    write_atomically(directory / SHARD_DATA, lambda temporary: joblib.dump(data, temporary))
    write_atomically(directory / SHARD_FACTS, lambda temporary: joblib.dump(facts, temporary))
    return facts


@dataclass
class ShardedBank:
    """The kit of a run shard by shard: the fitted models (without any customer's serving state),
    the rules, the bank's "now" and group counts; each shard's serving state is computed from its
    data when it is scored. The text models are loaded once per process, on its first shard."""

    settings: Settings
    rules: RuleBook
    artifacts: Artifacts
    as_of: pd.Timestamp
    group_counts: dict[str, dict[str, int]]
    top_k: int
    analyses: dict[str, PostAnalysis]
    detector: Any = field(default=None, repr=False, compare=False)

    def service_for(self, data: BankData) -> RecommendationService:
        from recommendation_service import RecommendationService
        from recommender import build_customer_base
        from text_models import LifeEventDetector, get_text_encoder

        encoder = get_text_encoder(self.settings)
        self.detector = self.detector or LifeEventDetector(encoder, self._analysed)
        base = build_customer_base(data, self.artifacts.model, self.as_of, encoder, self.detector)
        return RecommendationService(self.settings, data, self.rules, dataclasses.replace(self.artifacts, base=base),
                                     self.group_counts)

    def _analysed(self, texts: Sequence[str], here: Callable[[Sequence[str]], list[PostAnalysis]]
                  ) -> list[PostAnalysis]:
        """The detector's analyser: the run's analyses of the bank's posts, and a BERT pass here only
        for a text the posts did not have."""
        unread = [text for text in texts if text not in self.analyses]
        read_here = dict(zip(unread, here(unread))) if unread else {}
        return [self.analyses[text] if text in self.analyses else read_here[text] for text in texts]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "detector": None}


def bank_analyses(runner: ScoringEngine, settings: Settings, facts: Iterable[ShardFacts]) -> dict[str, PostAnalysis]:
    """Every distinct post text of the bank through the BERT pass, in fixed batches of the texts in
    sorted order, each a task of the run.

    Why once for the whole bank rather than per shard: a bank's posts repeat across its customers
    (15,972 distinct texts among 3,191,248 posts at a million customers), so every shard would read
    most of them again; and a text's analysis depends, to float rounding, on the texts it is
    batched with, so fixed batches make every shard's answers the same whichever engine, worker or
    resumed run scores it."""
    from text_models import TEXTS_PER_BATCH, analyse_batch

    texts = sorted(set().union(*(shard.posts for shard in facts)), key=lambda text: (len(text), text))
    batches = [tuple(texts[start:start + TEXTS_PER_BATCH]) for start in range(0, len(texts), TEXTS_PER_BATCH)]
    return {text: analysis for batch, analyses in runner.map(analyse_batch, without_secrets(settings), batches)
            for text, analysis in zip(batch, analyses)}


def score_shard(kit: ShardedBank, shard: tuple[Chunk, Path]) -> pa.Table:
    """A shard's answers. The chunk travels with the shard's directory so that the driver knows
    which part file the table is, whichever order the shards complete in."""
    import joblib

    _, directory = shard
    service = kit.service_for(joblib.load(directory / SHARD_DATA))
    return score_chunk(service, [str(customer) for customer in service.base.view.index], kit.top_k)


def score_by_shards(settings: Settings, out: Path, top_k: int, shards: int, engine: str, restart: bool,
                    progress: Callable[[int, int], ChunkProgress]) -> ScoreSummary:
    """Scores every customer of ``settings.data_dir`` into ``out`` with the saved models, the bank
    split by customer into ``shards`` (:mod:`data_shards`), each loaded, given its serving state and
    scored on its own: memory is bounded by a shard, not by the bank. The models come as they are
    from ``settings.models_dir``, whatever customers they were fitted on (a sample of the bank: at a
    million customers, training on all of them does not fit one machine).

    Steps, each resumable: the split (kept once complete), every shard loaded and cleaned (kept
    beside it), then every shard scored into a part file, as a run of the whole bank does.
    """
    from artifacts import data_fingerprint, saved_artifacts
    from data_loader import DataQualityReport
    from data_shards import split_bank

    started = time.perf_counter()
    artifacts = models_only(saved_artifacts(settings))
    parts = PartsDirectory(out)
    identity = RunIdentity(artifacts.model.version_, artifacts.trained_at, data_fingerprint(settings),
                           rules_digest(settings), settings.bias_tolerance, None, top_k, None, shards)
    complete = parts.open(identity, restart)
    with ENGINES[engine](settings) as runner:
        directories = split_bank(settings.data_dir, parts.path / "shards", shards, runner.map)
        facts = dict(runner.map(prepare_shard, without_secrets(settings), directories))
        quality = DataQualityReport.merged(str(settings.data_dir),
                                           [facts[directory].quality for directory in directories])
        quality.log()
        kit = sharded_kit(settings, artifacts, directories[0], facts, top_k,
                          bank_analyses(runner, settings, facts.values()))
        chunks = [Chunk(index, 0, facts.pop(directory).customers) for index, directory in enumerate(directories)]
        pending = [chunk for chunk in chunks if chunk.index not in complete]
        scored = runner.map(score_shard, kit, [(chunk, directories[chunk.index]) for chunk in pending])
        commit_all(parts, ((chunk, table) for (chunk, _), table in scored), progress_of(progress, chunks, pending))
    return dataclasses.replace(finish(parts, engine, chunks, pending, started), data_quality=quality.to_dict())


def models_only(artifacts: Artifacts) -> Artifacts:
    """The fitted models without the serving state and held-out answers of the customers they were
    fitted on: a sample's, not the scored bank's, and the largest part of the artifact."""
    return dataclasses.replace(artifacts, base=None, holdout=artifacts.holdout.iloc[:0])


def sharded_kit(settings: Settings, artifacts: Artifacts, first_shard: Path, facts: dict[Path, ShardFacts],
                top_k: int, analyses: dict[str, PostAnalysis]) -> ShardedBank:
    """The bank's kit from its shards' facts; the rules and the data-use policy are checked against
    the first shard's data (every shard has the same catalogue and columns)."""
    import joblib

    from artifacts import check_data_use_policy, load_rules
    from data_loader import now_after

    data = joblib.load(first_shard / SHARD_DATA)
    rules = load_rules(settings, data)
    check_data_use_policy(settings, data)
    counts = {attribute.name: dict(sum((Counter(shard.group_counts.get(attribute.name, {})) for shard in facts.values()),
                                       Counter()))
              for attribute in settings.protected_attributes}
    now = now_after([shard.latest for shard in facts.values()])
    return ShardedBank(without_secrets(settings), rules, artifacts, now, counts, top_k, analyses)
