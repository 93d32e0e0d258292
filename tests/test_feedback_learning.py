"""Learning from the customers' answers: the Beta-binomial layer between retrains, the examples a
retrain adds, and the report of acceptance, decline and suppression rates per product and group."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import create_app
from decision_store import DecisionStore, FinalOutcome, migrate
from feedback_learning import FeedbackEvidence, feedback_examples
from interactions import outcome_report
from tests.utils.service import wait_ready

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def outcome(customer: str, product: str, what: str, minutes: int = 0) -> FinalOutcome:
    return FinalOutcome(customer, product, what, NOW + timedelta(minutes=minutes))


def test_the_update_is_the_beta_binomial_posterior_mean_of_the_segment() -> None:
    outcomes = [outcome("A", "loan", "declined"), outcome("B", "loan", "declined"), outcome("C", "loan", "accepted"),
                outcome("D", "loan", "accepted"), outcome("X", "loan", "declined")]  # X: a segment unknown
    segments = {"A": "individual", "B": "individual", "C": "individual", "D": "organization"}
    evidence = FeedbackEvidence.from_outcomes(["card", "loan"], outcomes, segments, strength=4, since=None)
    scores = np.array([[0.2, 0.5], [0.3, 0.1]])  # a customer and one counterfactual variant

    adjusted, shifts = evidence.adjust(scores, "individual")
    # loan: 1 accepted of 3 answered, worth 3 offers against the model's 4: (4 p + 1) / (4 + 3)
    np.testing.assert_allclose(adjusted[:, 1], (4 * scores[:, 1] + 1) / 7)
    np.testing.assert_allclose(adjusted[:, 0], scores[:, 0], err_msg="no evidence on the card: unchanged")
    assert set(shifts) == {"loan"}
    assert (shifts["loan"].accepted, shifts["loan"].declined) == (1, 2)
    assert shifts["loan"].score == pytest.approx(3 / 7) and shifts["loan"].log_odds_change < 0

    organisation, _ = evidence.adjust(scores, "organization")
    np.testing.assert_allclose(organisation[:, 1], (4 * scores[:, 1] + 1) / 5)
    assert evidence.adjust(scores, "public body")[0] is scores, "a segment without answers keeps the model's scores"
    assert evidence.version != FeedbackEvidence(["card", "loan"], {}, 4, None).version
    counted_later = FeedbackEvidence.from_outcomes(["card", "loan"], outcomes[:2], segments, 4, None).including(
        outcomes[2:], segments)
    assert counted_later.counts == evidence.counts and counted_later.version == evidence.version


def test_a_retrain_learns_accepted_offers_as_take_ups_and_declines_as_negatives() -> None:
    customers = np.array(["A", "B", "C"])
    outcomes = [outcome("A", "loan", "declined"), outcome("A", "card", "accepted", 1),
                outcome("C", "loan", "accepted"), outcome("C", "loan", "declined", 5),  # later answer stands
                outcome("Z", "loan", "accepted"), outcome("A", "yacht", "accepted")]  # unknown: left out
    rows, labels, taught = feedback_examples(customers, ["card", "loan"], outcomes)
    assert rows.tolist() == [0, 2]
    assert taught.tolist() == [[True, True], [False, True]]
    assert labels.tolist() == [[True, False], [False, False]]


def test_declines_move_the_segments_scores_and_the_answer_says_so(api_settings, trained_service, tmp_path):
    """Customers of one segment decline a product through /feedback; the next customer of that segment sees
    its score shrunk toward their acceptance rate, /model shows the evidence and the explanation cites it."""
    settings = api_settings.model_copy(update={"state_dir": tmp_path / "state", "feedback_prior_strength": 2.0,
                                               "answer_cache_size": 1000})
    view = trained_service.base.view
    individuals = [str(c) for c in view.index[view["customer_type"] == "individual"][:60]]
    with TestClient(create_app(settings, factory=lambda _: trained_service)) as client:
        wait_ready(client)
        answers = {c: client.post("/recommend", json={"customer_id": c, "top_k": 10}).json() for c in individuals}
        offered = {c: [i["product_id"] for i in a["recommendations"]] for c, a in answers.items()}
        product = max({p for ps in offered.values() for p in ps},
                      key=lambda p: sum(p in ps for ps in offered.values()))
        decliners, target = [c for c in individuals if product in offered[c]][:3], None
        target = next(c for c in individuals if product in offered[c] and c not in decliners)
        before = next(i for i in answers[target]["recommendations"] if i["product_id"] == product)
        for customer in decliners:
            response = client.post("/feedback", json={"request_id": answers[customer]["request_id"],
                                                      "customer_id": customer, "product_id": product,
                                                      "outcome": "declined"})
            assert response.status_code == 200, response.text

        card = client.get("/model").json()["feedback"]["since_training"]
        assert {"product_id": product, "segment": "individual", "accepted": 0, "declined": len(decliners),
                "acceptance_rate": 0.0} in card["evidence"]
        after = client.post("/recommend", json={"customer_id": target, "top_k": 10}).json()
        moved = next((i for i in after["recommendations"] if i["product_id"] == product), None)
        if moved is not None:  # still in the list: its score and its explanation show the update
            assert moved["score"] == pytest.approx(2 * before["score"] / (2 + len(decliners)), abs=1e-4)
            factor = next(f for f in moved["explanation"]["factors"] if f["kind"] == "feedback")
            assert factor["value"] == f"0 of {len(decliners)} accepted" and factor["weight"] < 0
            assert f"declined {len(decliners)} of its offers" in factor["evidence"]
            assert "customers like you accepted" not in moved["explanation"]["summary"], "a decline is no reason"
        else:
            assert product not in [i["product_id"] for i in after["recommendations"]]


def test_the_report_gives_rates_per_product_and_per_protected_group(trained_service, tmp_path):
    url = f"sqlite:///{tmp_path / 'decisions.sqlite3'}"
    migrate(url)
    store = DecisionStore(url)
    from decision_store import DecisionRecord, OfferRecord, SuppressedRecord

    view = trained_service.base.view
    women = [str(c) for c in view.index[view["gender"] == "F"][:2]]
    men = [str(c) for c in view.index[view["gender"] == "M"][:2]]
    records = [DecisionRecord(f"r-{c}", c, NOW, False, False, "2.1.0", "fp", True, False, False, (),
                              (OfferRecord("loan", 1, 0.3, 0.3, "trees"), OfferRecord("card", 2, 0.2, 0.2, "trees")),
                              (SuppressedRecord("savings", "contact_policy.suppress_after_decline"),) if c == men[0]
                              else ())
               for c in women + men]
    store.record(records)
    store.add_feedback(f"r-{women[0]}", women[0], "loan", "accepted")
    store.add_feedback(f"r-{women[1]}", women[1], "loan", "accepted")
    store.add_feedback(f"r-{men[0]}", men[0], "loan", "declined")
    report = outcome_report(store, trained_service)
    store.close()

    everyone = report["all_customers"]
    assert everyone["answers"] == 4
    assert everyone["products"]["loan"] == {"offered": 4, "acceptance_rate": 0.5, "decline_rate": 0.25,
                                            "suppression_rate": 0.0}
    assert everyone["products"]["savings"]["suppression_rate"] == 0.25
    by_gender = report["by_group"]["gender"]
    assert by_gender["F"]["products"]["loan"]["acceptance_rate"] == 1.0
    assert by_gender["M"]["products"]["loan"]["acceptance_rate"] == 0.0
    assert by_gender["M"]["products"]["loan"]["decline_rate"] == 0.5
    assert set(report["by_group"]) == {a.name for a in trained_service.settings.protected_attributes}


def test_training_reads_the_answers_from_the_decision_log_and_never_creates_one(api_settings, tmp_path):
    from artifacts import logged_outcomes
    from decision_store import DecisionRecord, OfferRecord

    settings = api_settings.model_copy(update={"state_dir": tmp_path / "state"})
    assert logged_outcomes(settings) == []
    assert not (tmp_path / "state").exists(), "reading for training creates no database"

    migrate(settings.resolved_database_url)
    store = DecisionStore(settings.resolved_database_url)
    store.record([DecisionRecord("r-1", "C-1", NOW, False, False, "2.1.0", "fp", True, False, False, (),
                                 (OfferRecord("loan", 1, 0.3, 0.3, "trees"), OfferRecord("card", 2, 0.2, 0.2, "trees")))])
    store.add_feedback("r-1", "C-1", "loan", "declined", at=NOW)
    store.add_feedback("r-1", "C-1", "card", "shown", at=NOW)
    store.close()
    assert logged_outcomes(settings) == [FinalOutcome("C-1", "loan", "declined", NOW)]
    assert logged_outcomes(settings.model_copy(update={"decision_log": "off"})) == []
