"""Snapshot every known customer's answer, or diff today's answers against a snapshot.

Refactoring must not change what the service recommends where it was right. Run once before a
change (``--out before.json``) and once after (``--compare before.json``): the second run prints
how many customers got different products, ranks or scores, and exits non-zero when any did.

    .venv/bin/python bench/answers_snapshot.py --out /tmp/before.json
    .venv/bin/python bench/answers_snapshot.py --compare /tmp/before.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommendation_service import RecommendationService  # noqa: E402
from settings import get_settings  # noqa: E402

TOP_K = 5
SCORE_TOLERANCE = 1e-9


def current_answers(top_k: int) -> dict[str, list[list]]:
    """Each known customer's top-k as [product, rank, score, adjusted score], explanations off."""
    service = RecommendationService.start(get_settings())
    answers = {}
    for customer_id in service.base.view.index.astype(str):
        answer = service.recommend(customer_id, top_k, include_explanation=False)
        answers[customer_id] = [[r.product_id, r.rank, r.score, r.adjusted_score] for r in answer.recommendations]
    return answers


def differences(before: dict[str, list[list]], after: dict[str, list[list]]) -> dict[str, int]:
    counts = {"customers": len(before), "missing": 0, "other_products": 0, "other_scores": 0}
    for customer_id, old in before.items():
        new = after.get(customer_id)
        if new is None:
            counts["missing"] += 1
        elif [row[:2] for row in old] != [row[:2] for row in new]:
            counts["other_products"] += 1
        elif any(abs(a - b) > SCORE_TOLERANCE for o, n in zip(old, new) for a, b in zip(o[2:], n[2:])):
            counts["other_scores"] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write today's answers here")
    target.add_argument("--compare", type=Path, help="diff today's answers against this snapshot")
    parser.add_argument("--top-k", type=int, default=TOP_K)
    args = parser.parse_args()
    answers = current_answers(args.top_k)
    if args.out:
        args.out.write_text(json.dumps(answers))
        print(json.dumps({"customers": len(answers), "written": str(args.out)}))
        return 0
    counts = differences(json.loads(args.compare.read_text()), answers)
    print(json.dumps(counts))
    return 1 if counts["missing"] or counts["other_products"] or counts["other_scores"] else 0


if __name__ == "__main__":
    sys.exit(main())
