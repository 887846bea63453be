"""What the scorer answers, and how an answer is written out."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    entity_id: str
    score: float
    flagged: bool
    model: str

    @property
    def band(self):
        return "high" if self.score >= 0.8 else "medium" if self.score >= 0.3 else "low"

    def as_dict(self):
        return {"entity_id": self.entity_id, "score": round(self.score, 6), "flagged": self.flagged,
                "band": self.band, "model": self.model}
