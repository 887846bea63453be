"""What the catalogue publishes: item summaries by category."""
from dataclasses import dataclass

from . import store


@dataclass(frozen=True)
class ItemSummary:
    item_id: int
    title: str
    price: float


def browse(db, category, limit=20):
    return [ItemSummary(*row) for row in store.items_in(db, category, limit)]
