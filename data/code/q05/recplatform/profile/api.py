"""What the profile context publishes: a read-only view of a user, never its table."""
from dataclasses import dataclass

from . import store


@dataclass(frozen=True)
class ProfileView:
    user_id: int
    country: str
    segment: str
    preferred_category: str


def profile_of(db, user_id):
    return ProfileView(*store.find_user(db, user_id))
