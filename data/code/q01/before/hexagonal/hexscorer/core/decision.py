"""What the scorer answers, and how an answer is written out."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    entity_id: str
    score: float
    flagged: bool

    def as_dict(self):
        return {"entity_id": self.entity_id, "score": round(self.score, 6), "flagged": self.flagged}
