"""How well the life-event detector reads posts whose truth is known: the generator's post templates.

Every template of ``synthetic_data.POST_TEMPLATES`` is filled with the first value of each slot and read
by ``LifeEventDetector`` as the service reads a post. A template group named after an event planted that
event (found: the detector reads it); ``near_miss`` (someone else's news, a wish, a joke), ``noise_*`` and
``negative_*`` planted none. Prints, per group, the templates, how many showed the planted event, how many
showed another event, and the totals: what an explanation would state truly ("you posted about travel")
and falsely. Before the customer-type filter the service applies, so an organization's event read in a
household's template still counts as read. The generator's ``home_purchase`` templates are mostly about a
home just bought, which the detector reads as ``new_home`` by design (``TENSE_PAIRS``): not found, and read
as another event.

    .venv/bin/python bench/bench_event_detection.py
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.results_file import RESULTS, record  # noqa: E402
from settings import Settings  # noqa: E402
from synthetic_data import POST_TEMPLATES, SLOT_VALUES  # noqa: E402
from text_models import LifeEventDetector, get_text_encoder  # noqa: E402

SLOT = re.compile(r"\{(\w+)\}")


def filled(template: str) -> str:
    return SLOT.sub(lambda slot: SLOT_VALUES.get(slot.group(1), ("3",))[0], template)


def main() -> None:
    detector = LifeEventDetector(get_text_encoder(Settings(api_keys=[])))
    groups: dict[str, dict[str, int]] = {}
    for group, templates in POST_TEMPLATES.items():
        shown = [{detector.events[i] for i in row.nonzero()[0]}
                 for row in detector.detected_scores([filled(t) for t in templates])]
        groups[group] = {"templates": len(templates), "planted_found": sum(group in events for events in shown),
                         "other_events_read": sum(len(events - {group}) for events in shown)}
    planted = {g: f for g, f in groups.items() if g in detector.events}
    figures = {
        "planted_templates": sum(f["templates"] for f in planted.values()),
        "planted_found": sum(f["planted_found"] for f in planted.values()),
        "events_read_not_planted": sum(f["other_events_read"] for f in groups.values()),
        "groups": groups,
    }
    print(json.dumps(figures, indent=2))
    record(RESULTS / "event_detection.json", "templates", figures)


if __name__ == "__main__":
    main()
