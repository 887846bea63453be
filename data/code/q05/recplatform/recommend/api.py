"""What the recommendation context publishes: top-k item ids for a user."""
from .engine import rank


def recommend(dbs, user_id, k=10):
    return rank(dbs, user_id, k)
