"""`cli.py score --engine ray` and `cli.py train --engine ray`: chunks scored, products fitted and
posts analysed as Ray tasks, in parallel, on a local Ray or a cluster.

Only ``batch_scoring.ENGINES`` and ``cli.py train --engine ray`` import this module, and only when
the Ray engine is chosen: serving and the local engine never load or start Ray. Training is at
the end of the module (:class:`RayTraining`); what follows first is about scoring.

Where: ``RAY_ADDRESS`` (settings) names a cluster to join; unset, the run starts a local Ray on this
machine's CPUs and stops it at the end. A Ray already started in this process (a notebook, the
tests) is used as it is and left running.

What is shipped to the workers, once per run, through Ray's object store: the run's kit. Scoring a
bank loaded whole (``batch_scoring.LoadedBank``) ships the artifacts, which are what
``recommender.joblib`` holds (the fitted models and every known customer's serving state, computed
from the data at training) less the audit's held-out answers; the two tables of the data an answer
reads besides them, the catalogue and the customers' stated interests; the validated rule book; and
the settings without the service's secrets (API keys, database URL), which scoring never reads.
The customers, transactions, posts and holdings of the training data are not shipped, and no
shared filesystem is needed: the object store carries the kit to every node (numeric arrays are
read in place by the workers of a node, not copied), and each task carries only its chunk and
returns its chunk's table. Scoring by shards (``sharded_scoring.ShardedBank``) ships the fitted
models without any customer's serving state, the rules, the bank's "now", its group counts and
its posts' analyses; each task names a shard, which the worker reads from the run's directory.
The workers run the project's code and packages from their own image (see the README), not from
the driver.

Each worker process reads the kit the first time it runs a task of the run and keeps it for its
next tasks (Ray reuses a worker process for the tasks of a job), so a run costs one kit load per
worker, not per chunk.

A task whose worker dies (killed, out of memory, node lost) runs again on Ray, up to
``RAY_TASK_RETRIES`` times; the retry runs the same pure function on the same kit and item, so its
result is the one the first attempt would have returned. Errors raised by scoring itself are
not retried: they would fail again. The driver keeps at most two chunks per CPU in flight, so
answers waiting to be written stay bounded by chunks, not by customers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any, Self

import numpy as np
import ray

from batch_scoring import without_secrets
from recommender import HybridRecommender, ProductStep, StepResult, TrainingSet
from settings import Settings
from text_models import TEXTS_PER_BATCH, PostAnalysis, analyse_batch

logger = logging.getLogger(__name__)

ITEMS_IN_FLIGHT_PER_CPU = 2  # one being worked on, one queued behind it: no worker waits for the driver


_worker_kit: dict[str, Any] = {}
"""This worker process's kit, by the id of its object: one run's at a time, kept for the run's next tasks."""


def kit_of(reference: ray.ObjectRef) -> Any:
    """The run's kit, read from the object store on this worker's first task of the run."""
    key = reference.hex()
    if key not in _worker_kit:
        _worker_kit.clear()  # another run's kit: its memory goes before this one's comes
        _worker_kit[key] = ray.get(reference)
    return _worker_kit[key]


@ray.remote(num_cpus=1)
def run_task(task: Callable[[Any, Any], Any], kit: list[ray.ObjectRef], item: Any) -> Any:
    """One task on a worker. The kit's reference comes inside a list so that Ray hands over the
    reference rather than the kit: a worker reads the kit only once per run."""
    return task(kit_of(kit[0]), item)


class RayEngine:
    """A run's tasks as Ray tasks, each named after its function (the worker's process title says
    what it does), yielded to the driver as they complete (in any order)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_here = False

    def __enter__(self) -> Self:
        self.started_here = connect(self.settings)
        return self

    def __exit__(self, *_: object) -> None:
        if self.started_here:
            ray.shutdown()

    def map(self, task: Callable[[Any, Any], Any], kit: Any, items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        in_flight: dict[ray.ObjectRef, Any] = {}
        try:
            shipped = ray.put(kit)
            remote = run_task.options(name=task.__name__, max_retries=self.settings.ray_task_retries)
            window = ITEMS_IN_FLIGHT_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
            waiting = iter(items)

            def submit(count: int) -> None:
                for item in islice(waiting, count):
                    in_flight[remote.remote(task, [shipped], item)] = item

            submit(window)
            while in_flight:
                [done], _ = ray.wait(list(in_flight), num_returns=1)
                item = in_flight.pop(done)
                yield item, ray.get(done)
                submit(1)
        finally:
            for reference in in_flight:  # an interrupted run leaves no work behind on the cluster
                ray.cancel(reference)


def connect(settings: Settings) -> bool:
    """Joins ``RAY_ADDRESS``, or starts a local Ray when it is unset; True when this call started
    or joined Ray (and so must let go of it), False when this process was already connected."""
    if ray.is_initialized():
        return False
    ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    logger.info("ray connected", extra={"address": settings.ray_address or "local",
                                        "cpus": ray.cluster_resources().get("CPU", 0)})
    return True


# ---------------------------------------------------------------------------------------- training



@ray.remote(num_cpus=1)
def product_step_task(step: ProductStep[StepResult], training: TrainingSet, model: HybridRecommender, product: int
                      ) -> StepResult:
    """One step of one product's fits on a worker (one CPU: its trees' threads are the task's)."""
    return step(training, model, product)


@ray.remote(num_cpus=1)
def analyse_texts_task(settings: Settings, texts: list[str]) -> list[PostAnalysis]:
    """One batch of texts through the BERT pass on a worker, with the weights the settings name on
    the worker's machine (its image ships the same model; see the README)."""
    return analyse_batch(settings, texts)


class RayTraining:
    """`cli.py train --engine ray`: the per-product fits and the BERT pass over the posts as Ray tasks
    (``artifacts.TrainingEngine``); everything else of training stays on the driver.

    Used as a context manager it joins ``RAY_ADDRESS`` or starts a local Ray once for the whole
    training, and lets go of it at the end; a Ray this process had already started is used as it is.

    *Fits.* The training examples go to the object store once (workers on the driver's node read
    their arrays in place; released when the engine is) and the model as it stands (its design and
    settings, and the tree depth once chosen) with each step of the fits; each task runs one step
    for one product (its plain candidate trees, then its imbalance-aware fit) and returns what it
    fitted. The fits are seeded, so a task whose worker dies and is run again (up to
    ``RAY_TASK_RETRIES`` times) returns what the first would have. Products are submitted largest
    first, so that the longest fit does not start last.

    *Texts.* The posts the detector has not seen go out in batches of ``TEXTS_PER_BATCH``; each
    worker loads the text model once and returns its batch's analyses, which the driver keeps (and
    saves with its embedding cache) as if it had computed them. Fewer texts than a batch are
    analysed here: a task would cost more than it saves.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._started_here = False
        self._examples: tuple[TrainingSet, ray.ObjectRef] | None = None

    def __enter__(self) -> RayTraining:
        self._started_here = connect(self.settings)
        return self

    def __exit__(self, *_: object) -> None:
        self._examples = None  # the training set, hundreds of megabytes at scale, and its copy in the store
        if self._started_here:
            ray.shutdown()

    def fit_products(self, step: ProductStep[StepResult], training: TrainingSet, model: HybridRecommender
                     ) -> list[StepResult]:
        examples, unfitted = self._examples_in_store(training), ray.put(model)
        task = product_step_task.options(max_retries=self.settings.ray_task_retries)
        largest_first = np.argsort(-training.labels.sum(axis=0), kind="stable")
        pending = {int(product): task.remote(step, examples, unfitted, int(product)) for product in largest_first}
        return [ray.get(pending[product]) for product in range(len(model.product_ids_))]

    def _examples_in_store(self, training: TrainingSet) -> ray.ObjectRef:
        """The training examples in the object store, put there once for all the steps of the fits."""
        if self._examples is None or self._examples[0] is not training:
            self._examples = (training, ray.put(training))
        return self._examples[1]

    def analyse_texts(self, texts: Sequence[str], here: Callable[[Sequence[str]], list[PostAnalysis]]
                      ) -> list[PostAnalysis]:
        if len(texts) < TEXTS_PER_BATCH:
            return here(texts)
        settings = ray.put(without_secrets(self.settings))
        task = analyse_texts_task.options(max_retries=self.settings.ray_task_retries)
        batches = [task.remote(settings, list(texts[start:start + TEXTS_PER_BATCH]))
                   for start in range(0, len(texts), TEXTS_PER_BATCH)]
        return [analysis for batch in batches for analysis in ray.get(batch)]
