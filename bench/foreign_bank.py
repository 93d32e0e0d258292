"""A stand-in for a bank nobody on this team generated: its own catalogue, ids, vocabulary and code.

The product is judged on held-out banks where life events in posts and spending drive take-up and
no rules file exists. This generator shares nothing with synthetic_data.py on purpose, so a
figure measured here says how the recommender fares on someone else's data, not on our own.
Latent events (a baby, a home, a new hire...) leave posts that never name a product and shift
spending; most take-ups follow an event within ~4 months; a few background and random take-ups
add noise. Writes the canonical CSVs (SPEC section 2).

    .venv/bin/python bench/foreign_bank.py --out /tmp/fb600 --customers 600 --seed 7
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START, END = pd.Timestamp("2023-01-01"), pd.Timestamp("2025-12-31")
RECENT_FROM, RECENT_TO = pd.Timestamp("2025-03-15"), pd.Timestamp("2025-10-15")

# product id: (name, category, segment, risk, description)
CATALOGUE = {
    "FB-EVR": ("Flex Everyday Account", "daily_banking", "individual", 1, "A no-fee account for wages, bills and card spending, with instant payment alerts in the app."),
    "FB-RDS": ("Round-Up Saver", "deposits", "individual", 1, "An easy-access savings pot that rounds up your card purchases and pays a variable interest rate."),
    "FB-RWC": ("Horizon Rewards Card", "credit_lines", "individual", 3, "A credit card that earns points on everyday shopping, with up to 56 days interest-free."),
    "FB-GTC": ("Globetrotter Travel Cover", "cover", "individual", 1, "Annual multi-trip travel insurance covering medical emergencies, cancelled trips and lost luggage abroad."),
    "FB-MCW": ("Multi-Currency Wallet", "daily_banking", "both", 2, "Hold, exchange and spend in over 30 currencies at mid-market rates, at home and abroad."),
    "FB-FHM": ("First Home Mortgage", "home_finance", "individual", 3, "A fixed-rate mortgage for first-time buyers with a deposit from 5% and free property valuation."),
    "FB-HCP": ("Home Contents Protection", "cover", "individual", 1, "Insurance for your furniture, electronics and belongings against theft, fire and flood at home."),
    "FB-JFS": ("Junior Future Saver", "deposits", "individual", 1, "A tax-free pot that mums, dads and grandparents pay into for a youngster, paid out at 18."),
    "FB-FLP": ("Family Life Protection", "cover", "individual", 2, "Life insurance that pays a lump sum to your partner and children if you die or fall critically ill."),
    "FB-SSA": ("Student Starter Account", "daily_banking", "individual", 2, "A bank account for people in college or university, with a 0% overdraft of up to 2,000 and a free railcard."),
    "FB-RIP": ("Retirement Income Plan", "retirement", "individual", 2, "Swap the money built up in your workplace pension for a fixed monthly payment that lasts as long as you live."),
    "FB-MGP": ("Managed Growth Portfolio", "wealth", "individual", 4, "A diversified fund portfolio managed by experts for people who want their money to grow over years."),
    "FB-VFL": ("Vehicle Finance Loan", "credit_lines", "individual", 3, "Borrow for your next vehicle at a fixed rate and pay it back in equal monthly amounts over one to five years."),
    "FB-EOA": ("Enterprise Operating Account", "company_services", "both", 1, "A business account for sole traders and companies with invoicing, card terminals and accounting links."),
    "FB-PYM": ("Payroll Manager", "company_services", "organization", 2, "Run staff wages, tax deductions and payslips automatically every month from your business account."),
    "FB-TFF": ("Trade Finance Facility", "company_services", "organization", 4, "Letters of credit and invoice finance for companies selling goods to buyers in other countries."),
    "FB-EQL": ("Equipment Lease", "company_services", "organization", 3, "Spread the cost of machinery, vehicles and IT equipment over fixed monthly payments."),
}

# event: (segment, age range, [(product, take-up probability)], spending categories, posts)
EVENTS = {
    "baby": ("individual", (23, 43), [("FB-JFS", 0.6), ("FB-FLP", 0.45)], ["baby goods", "pharmacy", "nursery"], [
        "We just found out we're expecting our first little one!", "Scan day today, everything looks perfect 💕",
        "Nursery is painted, cot is built, now we wait", "She arrived at 3am, tiny human, no sleep but so much love",
        "Anyone recommend a pram that folds with one hand?", "Two weeks of nappies and night feeds and I wouldn't change a thing"]),
    "home": ("individual", (25, 52), [("FB-FHM", 0.6), ("FB-HCP", 0.5)], ["furniture", "home improvement", "removals"], [
        "The seller said yes!!! We're finally getting our own place", "Keys collected. First night on a mattress on the floor 😂",
        "Spent all weekend viewing flats, the market is mad", "Goodbye landlord, hello DIY", "Which paint colour for a north-facing lounge?"]),
    "university": ("individual", (17, 23), [("FB-SSA", 0.65)], ["tuition", "books", "student housing"], [
        "Got my offer from uni, can't believe it", "Moving into halls next week, nervous and excited",
        "Freshers week survived, barely", "First lecture at 9am, who designed this timetable", "Results day went better than I hoped!"]),
    "retiring": ("individual", (56, 68), [("FB-RIP", 0.65)], ["financial advice", "garden centre", "cruise"], [
        "Forty years at the same firm, last day is in March", "Counting down the weeks until I hang up my work boots",
        "Retirement party was lovely, thank you all", "No more alarm clock from next month!", "Planning what to do with all this free time once I stop working"]),
    "travel": ("individual", (19, 90), [("FB-GTC", 0.55), ("FB-MCW", 0.35)], ["flights", "hotels", "currency exchange"], [
        "Booked! Three weeks backpacking through Vietnam", "New passport arrived, bags half packed ✈️",
        "Sunset in Lisbon, never want to leave", "Anyone been to Peru? Looking for tips for our trip", "Long haul flight tomorrow, wish me luck"]),
    "new_job": ("individual", (22, 60), [("FB-MGP", 0.5), ("FB-RWC", 0.3)], ["work clothing", "commuting", "restaurants"], [
        "Thrilled to share I've accepted a new role as a senior analyst", "Handed in my notice, starting somewhere new on Monday",
        "Big promotion news today, still buzzing", "New job, new city, new me", "Finally a pay rise that reflects the work"]),
    "car": ("individual", (20, 70), [("FB-VFL", 0.6)], ["car dealer", "fuel", "car maintenance"], [
        "Passed my driving test first time!", "Old banger finally died, time to go car shopping",
        "Test drove three hatchbacks today, decisions decisions", "Picked up the new motor this morning 🚗", "Anyone know a good family car that is cheap to run?"]),
    "side_business": ("individual", (24, 60), [("FB-EOA", 0.55)], ["office supplies", "software", "business registration"], [
        "Took the leap and registered my own company today", "Quit the day job to go freelance full time",
        "My little candle shop got its first 100 orders!", "Building my website this weekend, launching soon", "Self-employed life: week one"]),
    "hiring": ("organization", (0, 200), [("FB-PYM", 0.65)], ["recruitment", "payroll", "training"], [
        "Five new roles open in our warehouse team, apply via the link", "Say hello to Priya, Tom and Ade, our three newest starters",
        "Our team has doubled this year, thank you to everyone who applied", "Looking for an experienced bookkeeper to join us"]),
    "exporting": ("organization", (0, 200), [("FB-TFF", 0.55), ("FB-MCW", 0.45)], ["freight", "customs duties", "trade fairs"], [
        "Our first shipment to Germany left the dock today", "Signed a distributor in Japan, our products go overseas",
        "Back from the trade fair in Dubai with a full order book", "International customers now make up a third of our sales"]),
    "expansion": ("organization", (0, 200), [("FB-EQL", 0.6)], ["machinery", "construction", "vehicles"], [
        "Broke ground on our second production site", "Three more lathes going in next week, capacity up 40%",
        "We've outgrown the workshop, moving to a bigger unit", "Opening our third branch this summer"]),
}
NOISE = ["Best fish and chips on the coast, no contest", "Rain again. Of course it's raining", "What a match last night!",
         "Sunday roast and a nap, perfect", "Anyone watching the new detective series?", "Park run PB this morning 🏃",
         "Dog rolled in something awful on our walk", "Coffee number three and it's only 10am", "Football tonight, come on lads",
         "Heatwave this week, melting", "Tried a new curry recipe, nailed it", "Traffic on the ring road is a nightmare",
         "Quarterly team offsite, great day of planning", "Friday cake in the office, as is tradition"]
BASE_SPEND = {"individual": ["groceries", "restaurants", "utilities", "rent", "public transport", "streaming", "clothing", "pharmacy"],
              "organization": ["supplier payment", "office rent", "utilities", "software", "marketing", "insurance premium"]}
CITIES = ["Leeds", "Bristol", "Glasgow", "Cardiff", "Belfast", "Norwich", "Aberdeen", "Exeter", "Leicester", "Hull"]
OCCUPATIONS = ["nurse", "teacher", "electrician", "software developer", "retail assistant", "accountant", "chef", "driver", "student", "civil servant"]
INDUSTRIES = ["manufacturing", "hospitality", "retail", "construction", "logistics", "agriculture", "IT services", "healthcare"]
GENERIC = ["", "", "", "", "", "good service", "low fees", "mobile app"]


def _day(rng: np.random.Generator, start: pd.Timestamp, end: pd.Timestamp) -> pd.Timestamp:
    """A uniform random day in [start, end]: every date in the bank is drawn through here."""
    return start + pd.Timedelta(days=int(rng.integers(0, (end - start).days + 1)))


def _customer(rng: np.random.Generator, number: int) -> dict:
    """One profile; stated preferences are mostly blank or generic so the signal lives elsewhere."""
    org = rng.random() < 0.2
    row = {"customer_id": f"K{number:06d}", "customer_type": "organization" if org else "individual",
           "age": np.nan if org else int(rng.integers(18, 86)), "gender": "" if org else rng.choice(["F", "M", ""], p=[.46, .46, .08]),
           "location": rng.choice(CITIES), "income": round(float(rng.lognormal(14.5 if org else 10.6, 0.8)), -2),
           "education": "" if org else rng.choice(["Secondary", "Diploma", "Undergraduate", "Postgraduate", ""]),
           "occupation": "" if org else rng.choice(OCCUPATIONS), "industry": rng.choice(INDUSTRIES) if org else "",
           "employees": int(rng.integers(2, 250)) if org else np.nan, "interests": rng.choice(GENERIC),
           "preferences": rng.choice(GENERIC), "financial_needs": rng.choice(GENERIC)}
    if rng.random() < 0.05:  # dirty data: a missing income, as real extracts have
        row["income"] = np.nan
    return row


def _events(rng: np.random.Generator, cust: dict) -> list[tuple[str, pd.Timestamp]]:
    """0-2 older events plus, for most customers, one recent event around the cutoff, so that
    take-ups both before it (to learn from) and after it (to find) exist; never the same event twice."""
    age = cust["age"]
    fits = [e for e, (seg, (lo, hi), *_) in EVENTS.items()
            if seg == cust["customer_type"] and (np.isnan(age) or lo <= age <= hi)]
    if not fits:
        return []
    chosen = list(rng.choice(fits, size=min(len(fits), int(rng.integers(1, 4))), replace=False))
    dated = [(e, _day(rng, START, pd.Timestamp("2025-02-28"))) for e in chosen[1:]]
    if rng.random() < 0.9:
        dated.append((chosen[0], _day(rng, RECENT_FROM, RECENT_TO)))
    return dated


def _posts(rng: np.random.Generator, cid: str, org: bool, events: list) -> list[dict]:
    """1-3 posts per event near its date (some before: people announce plans), plus noise to 3-12."""
    posts = []
    for event, date in events:
        lines = EVENTS[event][4]
        for text in rng.choice(lines, size=int(rng.integers(1, 4)), replace=False):
            posts.append((text, date + pd.Timedelta(days=int(rng.integers(-60, 22)))))
    for _ in range(max(0, int(rng.integers(3, 13)) - len(posts))):
        posts.append((rng.choice(NOISE), _day(rng, START, END)))
    platforms = ["LinkedIn", "X"] if org else ["Instagram", "Facebook", "X", "Threads"]
    return [{"customer_id": cid, "platform": rng.choice(platforms), "content": text,
             "timestamp": (min(max(ts, START), END) + pd.Timedelta(minutes=int(rng.integers(420, 1380)))).isoformat()}
            for text, ts in posts]


def _spending(rng: np.random.Generator, cid: str, kind: str, events: list) -> list[dict]:
    """20-80 transactions: routine spending all along, and event spending in the months around each event."""
    scale = 900.0 if kind == "organization" else 60.0
    rows = [(rng.choice(BASE_SPEND[kind]), _day(rng, START, END), rng.lognormal(np.log(scale), 0.7))
            for _ in range(int(rng.integers(14, 60)))]
    for event, date in events:
        for _ in range(int(rng.integers(3, 8))):
            when = min(max(date + pd.Timedelta(days=int(rng.integers(-30, 90))), START), END)
            rows.append((rng.choice(EVENTS[event][3]), when, rng.lognormal(np.log(scale * 5), 0.8)))
    modes = ["card", "bank transfer", "direct debit", "cash"]
    return [{"customer_id": cid, "date": d.date().isoformat(), "amount": round(float(a), 2), "category": c,
             "type": "debit", "payment_mode": rng.choice(modes, p=[.5, .25, .2, .05])} for c, d, a in rows]


def _holdings(rng: np.random.Generator, cid: str, kind: str, events: list) -> list[dict]:
    """Background basics before 2025-07 (popular products), event-driven take-ups 0-120 days after an
    event, and a low base rate of random take-ups of popular products; one holding per product."""
    held: dict[str, pd.Timestamp] = {}
    basics = [("FB-EOA", 0.85)] if kind == "organization" else [("FB-EVR", 0.8), ("FB-RDS", 0.35), ("FB-RWC", 0.25)]
    for product, p in basics:
        if rng.random() < p:
            held[product] = _day(rng, pd.Timestamp("2014-01-01"), pd.Timestamp("2025-06-30"))
    for event, date in events:
        for product, p in EVENTS[event][2]:
            if product not in held and rng.random() < p:
                held[product] = date + pd.Timedelta(days=int(rng.integers(0, 121)))
    popular = ["FB-MCW", "FB-EQL"] if kind == "organization" else ["FB-RDS", "FB-RWC", "FB-GTC", "FB-MGP"]
    if rng.random() < 0.12:
        product = rng.choice(popular)
        held.setdefault(product, _day(rng, START, END))
    return [{"customer_id": cid, "product_id": p, "start_date": d.date().isoformat()}
            for p, d in held.items() if d <= END]


def write_foreign_bank(out: Path, customers: int, seed: int) -> None:
    """Writes the five canonical CSVs of a ``customers``-strong foreign bank into ``out``; same seed, same bank."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    profiles, posts, spending, holdings = [], [], [], []
    for number in range(1, customers + 1):
        cust = _customer(rng, number)
        events = _events(rng, cust)
        cid, kind = cust["customer_id"], cust["customer_type"]
        profiles.append(cust)
        posts += _posts(rng, cid, kind == "organization", events)
        spending += _spending(rng, cid, kind, events)
        holdings += _holdings(rng, cid, kind, events)
    posts_df = pd.DataFrame(posts).sort_values("timestamp", kind="stable")
    posts_df.insert(0, "post_id", [f"SP{i:07d}" for i in range(1, len(posts_df) + 1)])
    tx = pd.DataFrame(spending).sort_values("date", kind="stable")
    tx.insert(0, "transaction_id", [f"TX{i:08d}" for i in range(1, len(tx) + 1)])
    products = pd.DataFrame([{"product_id": pid, "name": n, "category": c, "segment": s, "risk_level": r,
                              "description": d, "min_age": 18 if pid in ("FB-RWC", "FB-FHM", "FB-VFL") else np.nan,
                              "min_income": np.nan} for pid, (n, c, s, r, d) in CATALOGUE.items()])
    pd.DataFrame(profiles).astype({"age": "Int64", "employees": "Int64"}).to_csv(out / "customers.csv", index=False)
    tx.to_csv(out / "transactions.csv", index=False)
    posts_df.to_csv(out / "social_posts.csv", index=False)
    products.to_csv(out / "products.csv", index=False)
    pd.DataFrame(holdings).sort_values(["customer_id", "start_date"]).to_csv(out / "holdings.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    write_foreign_bank(args.out, args.customers, args.seed)


if __name__ == "__main__":
    main()
