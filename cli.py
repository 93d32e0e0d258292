"""Command line: generate-data, split-data, check-data, train, evaluate, audit, score, serve, migrate.

Each command prints JSON (or serves) and exits non-zero with a one-line reason when it cannot do
its job: a missing directory, unreadable data, an invalid rules file or bad configuration.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batch_scoring import ENGINES, ChunkProgress, chunk_progress, score_customers
from sharded_scoring import score_by_shards
from schemas import RecommendRequest
from settings import Settings, get_settings

logger = logging.getLogger("cli")
LONG_RUNNING = {"serve", "score"}  # commands that log their progress at LOG_LEVEL; the others only warnings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:
        return _fail(f"invalid configuration: {_validation_summary(error)}")
    from app import configure_logging

    configure_logging(settings.log_level if args.command in LONG_RUNNING else "WARNING")
    try:
        return args.handler(args, settings)
    except Exception as error:  # a clear reason on one line, not a stack trace
        from data_loader import DataLoadError
        from artifacts import ServiceError

        if isinstance(error, (DataLoadError, ServiceError, ValueError, FileNotFoundError)):
            return _fail(str(error))
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate-data", help="write a synthetic canonical data set")
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--customers", type=int, default=10_000)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--bias", action="append", default=None,
                          help="historical bias to inject, e.g. gender=F:category=investments:factor=0.5 "
                               "(repeatable; default: the generator's own)")
    generate.add_argument("--format", choices=("csv", "parquet"), default="csv")
    generate.set_defaults(handler=generate_data)

    split = commands.add_parser("split-data", help=(
        "split a bank's data by customer into shards, each a data directory: one shard is a random sample of the "
        "customers, to train on when the bank is too large to train on whole"))
    split.add_argument("--data", type=Path, required=True)
    split.add_argument("--out", type=Path, required=True, help="the directory to write the shards into (replaced)")
    split.add_argument("--shards", type=_positive_int, required=True)
    split.set_defaults(handler=split_data)

    for name, handler, text in (("check-data", check_data, "load a data directory and print its quality report"),
                                ("train", train_models, "fit the pipeline and models and save them"),
                                ("audit", audit, "print the AIF360 group audit")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--data", type=Path, required=True)
        command.set_defaults(handler=handler)

    commands.choices["train"].add_argument("--engine", choices=("local", "ray"), default="local", help=(
        "ray: the per-product fits as parallel Ray tasks (RAY_ADDRESS joins a cluster; unset starts a local Ray)"))

    evaluate = commands.add_parser("evaluate", help="time-split evaluation against a popularity baseline")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--cutoff", required=True, help="YYYY-MM-DD")
    evaluate.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    evaluate.add_argument("--no-ablations", action="store_true", help="skip the without-text/events models")
    evaluate.set_defaults(handler=evaluate_command)

    score = commands.add_parser("score", help="write every known customer's top-k answer to Parquet, in chunks")
    score.add_argument("--data", type=Path, required=True)
    score.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    score.add_argument("--top-k", type=_positive_int, default=RecommendRequest.model_fields["top_k"].default)
    score.add_argument("--engine", choices=sorted(ENGINES), default="local")
    division = score.add_mutually_exclusive_group()  # a sharded run's chunks are its shards
    division.add_argument("--chunk-size", type=_positive_int, default=None,
                          help="customers per chunk, the unit of memory and of resuming (default: SCORE_CHUNK_SIZE)")
    division.add_argument("--shards", type=_positive_int, default=None, help=(
        "split the bank by customer into this many shards, each loaded and scored on its own, so that memory is "
        "bounded by a shard rather than the bank; scores with the saved models as they are (train them on a sample "
        "of a bank too large to train on); without it the bank is loaded whole, as the service loads it"))
    score.add_argument("--restart", action="store_true",
                       help="discard the chunks of an unfinished run instead of resuming it")
    score.set_defaults(handler=score_command)

    serve = commands.add_parser("serve", help="serve the API")
    serve.set_defaults(handler=serve_command)

    report = commands.add_parser("report", help="acceptance, decline and suppression rates of the logged offers, "
                                                "per product and per protected group")
    report.add_argument("--data", type=Path, required=True)
    report.add_argument("--since", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default: everything)")
    report.set_defaults(handler=report_command)

    migrate = commands.add_parser("migrate", help="bring the decision log's database schema up to date "
                                                  "(the service also does it at start-up)")
    migrate.set_defaults(handler=migrate_command)
    return parser


def report_command(args: argparse.Namespace, settings: Settings) -> int:
    from decision_store import DecisionStore, migrate
    from interactions import outcome_report
    from recommendation_service import RecommendationService

    settings = settings.model_copy(update={"data_dir": _existing(args.data)})
    service = RecommendationService.start(settings)
    migrate(settings.resolved_database_url)
    store = DecisionStore(settings.resolved_database_url)
    since = datetime.combine(args.since, time.min, timezone.utc) if args.since else None
    try:
        return _print(outcome_report(store, service, since))
    finally:
        store.close()


def migrate_command(args: argparse.Namespace, settings: Settings) -> int:
    from decision_store import migrate

    migrate(settings.resolved_database_url)
    where = "DATABASE_URL" if settings.database_url else str(settings.state_dir)
    return _print({"migrated": True, "database": where})


def generate_data(args: argparse.Namespace, settings: Settings) -> int:
    from synthetic_data import DEFAULT_BIASES, generate_bank_data, parse_bias

    biases = [parse_bias(spec) for spec in args.bias] if args.bias else DEFAULT_BIASES
    summary = generate_bank_data(args.out, args.customers, args.seed, catalogue_file=settings.catalogue_file,
                                 biases=biases, file_format=args.format)
    return _print(summary)


def split_data(args: argparse.Namespace, settings: Settings) -> int:
    from data_shards import split_bank

    return _print({"shards": [str(directory) for directory in split_bank(_existing(args.data), args.out, args.shards)]})


def check_data(args: argparse.Namespace, settings: Settings) -> int:
    from data_loader import load_bank_data
    from text_models import get_text_encoder

    data = load_bank_data(_existing(args.data), settings, get_text_encoder(settings))
    return _print(data.quality.to_dict())


def train_models(args: argparse.Namespace, settings: Settings) -> int:
    from artifacts import ARTIFACT_FILE, data_fingerprint, load_data, load_rules, save_artifacts, train_artifacts
    from batch import run_audit
    from recommendation_service import RecommendationService

    settings = settings.model_copy(update={"data_dir": _existing(args.data)})
    data = load_data(settings)
    rules = load_rules(settings, data)
    if args.engine == "ray":
        from ray_engine import RayTraining  # Ray is imported only when chosen

        with RayTraining(settings) as engine:
            artifacts = train_artifacts(data, settings, data_fingerprint(settings), engine)
    else:
        artifacts = train_artifacts(data, settings, data_fingerprint(settings))
    service = RecommendationService(settings, data, rules, artifacts)
    run_audit(service)
    save_artifacts(artifacts, settings.models_dir / ARTIFACT_FILE)
    card = service.model_card()
    card.pop("data_quality")
    return _print({"saved": str(settings.models_dir / ARTIFACT_FILE), **card})


def evaluate_command(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd

    from evaluation import evaluate

    try:
        cutoff = pd.Timestamp(args.cutoff)
    except ValueError:
        return _fail(f"--cutoff must be a date YYYY-MM-DD, not {args.cutoff!r}")
    settings = settings.model_copy(update={"data_dir": _existing(args.data)})
    return _print(evaluate(settings, cutoff, tuple(args.k), ablations=not args.no_ablations))


def audit(args: argparse.Namespace, settings: Settings) -> int:
    from recommendation_service import RecommendationService

    settings = settings.model_copy(update={"data_dir": _existing(args.data)})
    service = RecommendationService.start(settings)
    return _print(service.artifacts.audit)


def score_command(args: argparse.Namespace, settings: Settings) -> int:
    """Starts the service as ``serve`` does (loads the saved models, or trains them), then scores
    every known customer. Interrupted, it keeps the complete chunks: the same command resumes."""
    from recommendation_service import RecommendationService

    settings = settings.model_copy(update={"data_dir": _existing(args.data)})

    def progress(total: int, done: int) -> ChunkProgress:
        return chunk_progress(total, done, sys.stderr)

    try:
        if args.shards:
            summary = score_by_shards(settings, args.out, args.top_k, args.shards, args.engine, args.restart, progress)
        else:
            service = RecommendationService.start(settings)
            summary = score_customers(service, args.out, args.top_k, args.chunk_size or settings.score_chunk_size,
                                      args.engine, args.restart, progress)
    except KeyboardInterrupt:
        return _fail("interrupted; the complete chunks are kept: run the same command again to resume", code=130)
    return _print(summary)


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app import create_app, reload_on_hangup
    from workers import serve_workers

    if settings.workers > 1:
        return serve_workers(settings)

    failures: list[str] = []
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        failures.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_failure=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                                           access_log=False, log_level=settings.log_level.lower(),
                                           timeout_graceful_shutdown=settings.shutdown_grace_seconds))
    # uvicorn drains on SIGTERM (no new connections, requests in flight finish, the decision log is
    # flushed), then raises the signal again once done: by then the stop is orderly, so exit 0, as
    # a process manager or Kubernetes expects of a clean stop
    signal.signal(signal.SIGTERM, lambda _signal, _frame: None)
    signal.signal(signal.SIGHUP, lambda _signal, _frame: reload_on_hangup(app))
    server.run()
    return _fail(f"start-up failed: {failures[0]}") if failures else 0


def _existing(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"data directory not found: {path}")
    return path


def _print(result: Any) -> int:
    print(json.dumps(_jsonable(result), indent=2, default=str))
    return 0


def _jsonable(result: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more; argparse reports anything else as a usage error, before
    the service starts."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _validation_summary(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}" for e in error.errors())


if __name__ == "__main__":
    sys.exit(main())
