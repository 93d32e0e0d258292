"""The framework's ceiling: FastAPI validating a /recommend body and returning a response of the
same schema and size, with no computation. Served by bench_serving.py beside the real app."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI  # noqa: E402

from schemas import RecommendRequest, RecommendResponse  # noqa: E402

TEMPLATE = RecommendResponse.model_validate(json.loads(Path(os.environ["CEILING_RESPONSE_FILE"]).read_text()))
app = FastAPI()


@app.post("/recommend", response_model=RecommendResponse)
async def recommend(body: RecommendRequest) -> RecommendResponse:
    return TEMPLATE.model_copy(update={"customer_id": body.customer_id})
