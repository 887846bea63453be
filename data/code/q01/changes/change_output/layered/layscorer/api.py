"""Presentation layer: builds the service and writes its answers out."""
from pathlib import Path

from .service import ScoringService


class ScoringApi:
    def __init__(self, service):
        self.service = service

    def score(self, entity_id):
        entity_id, score, flagged = self.service.score(entity_id)
        band = "high" if score >= 0.8 else "medium" if score >= 0.3 else "low"
        return {"entity_id": entity_id, "score": round(score, 6), "flagged": flagged, "band": band,
                "model": self.service.model_name}


def build_scorer(rows, workdir):
    service = ScoringService(str(Path(workdir) / "features.db"), Path(workdir) / "model.pkl")
    service.save_rows(rows)
    return ScoringApi(service)
