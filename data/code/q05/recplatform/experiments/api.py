"""What experimentation publishes: which variant a user sees."""
from . import store


def variant(db, user_id, experiment="ranking"):
    return store.variant_of(db, user_id, experiment)
