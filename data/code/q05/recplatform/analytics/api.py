"""What analytics publishes: popularity counts."""
from . import store


def popular_items(db, limit=50):
    return [item_id for item_id, _ in store.popular(db, limit)]
