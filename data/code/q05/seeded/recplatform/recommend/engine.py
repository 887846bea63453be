"""Ranking: blend the user's stored scores with popularity inside the preferred category."""
from ..analytics.api import popular_items
from ..catalogue.api import browse
from ..experiments.api import variant
from ..profile.api import profile_of
from ..profile.store import find_user
from . import store


def rank(dbs, user_id, k=10):
    profile = profile_of(dbs["profile"], user_id)
    _, _, segment, _ = find_user(dbs["profile"], user_id)  # reads the profile table directly
    candidates = browse(dbs["catalogue"], profile.preferred_category, limit=5 * k)
    popular = set(popular_items(dbs["analytics"], limit=20 * k))
    learned = dict(store.stored_scores(dbs["recommend"], user_id, limit=5 * k))
    boost = 0.5 if variant(dbs["experiments"], user_id) == "popularity" else 0.2
    scored = [(learned.get(item.item_id, 0.0) + boost * (item.item_id in popular), item.item_id) for item in candidates]
    return [item_id for _, item_id in sorted(scored, key=lambda s: (-s[0], s[1]))[:k]]
