"""The user-profile context's own table; nobody else reads it directly."""

TABLES = {
    "users": [("user_id", "INTEGER PRIMARY KEY"), ("name", "TEXT"), ("country", "TEXT"), ("segment", "TEXT"),
              ("preferred_category", "TEXT"), ("signup_day", "INTEGER")],
}
COPIES = []  # this context keeps no one else's fields


def find_user(db, user_id):
    row = db.execute("SELECT user_id, country, segment, preferred_category FROM users WHERE user_id = ?",
                     (user_id,)).fetchone()
    if row is None:
        raise LookupError(f"unknown user {user_id}")
    return row
