"""The group audit of a trained service, as ``/fairness``, ``cli.py audit`` and the console read it.

One test on the session's small trained bank (minutes to set up); the audit's own logic is tested
on constructed data in test_bias_detector.py.
"""
from __future__ import annotations

import json

from artifacts import AUDIT_TOP_K
from batch import batch_recommendations
from console import audit_grid, cell_status


def test_fairness_carries_intervals_exposure_and_intersections_and_keeps_the_console_keys(client, trained_service):
    text = client.get("/fairness").text
    audit = json.loads(text)
    json.dumps(audit, allow_nan=False)  # no NaN or infinity slipped through the API's serialisation

    ranks = batch_recommendations(trained_service, AUDIT_TOP_K, rows=[0, 1, 2, 3])["rank"]
    assert ranks.between(1, AUDIT_TOP_K).all()  # the audit's recommendations carry their place in the list
    assert audit["criteria"]["exposure"].startswith("1/log2(rank + 1)")
    assert audit["criteria"]["confidence_level"] == 0.95
    individual = [e for e in audit["entries"] if e["n_privileged"] and e["n_unprivileged"]]
    assert individual and all(e["exposure"] is not None for e in individual)
    for entry in individual:
        rates, interval = entry["recommendations"], entry["recommendations"]["disparate_impact_interval"]
        if rates["disparate_impact"] is not None:
            assert interval["low"] <= rates["disparate_impact"] <= (interval["high"] or float("inf"))
        if entry["status"] == "flagged":
            blocks = [entry["recommendations"], entry["holdings"], entry["exposure"]]
            assert any(block["flagged"] for block in blocks)

    names = [attribute.name for attribute in trained_service.settings.protected_attributes]
    pairs = {" x ".join(e["group"]) for e in audit["intersections"]}
    assert pairs == {f"{a} x {b}" for i, a in enumerate(names) for b in names[i + 1:]}
    summary = audit["summary"]["intersections"]
    assert summary["entries"] == len(audit["intersections"])
    assert summary["flagged"] == sum(e["status"] == "flagged" for e in audit["intersections"])
    small = [e for e in audit["intersections"] if e["n_group"] < trained_service.settings.min_group_size]
    assert small and all(e["status"] == "insufficient_data" for e in small)

    grid = audit_grid(audit)  # the console's fairness page: its keys still read
    assert sum(len(cells) for cells in grid.values()) == len(audit["entries"])
    for entry in audit["entries"]:
        status = cell_status(entry, audit)
        assert status in {"ok", "flagged", "inconclusive", "insufficient_data"}
        if status == "inconclusive":
            assert "could be chance" in entry["recommendations"]["note"]
