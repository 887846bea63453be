"""The experimentation context's assignments, with the user fields it needs to stratify."""

TABLES = {
    "assignments": [("user_id", "INTEGER"), ("experiment", "TEXT"), ("variant", "TEXT")],
}
COPIES = [("users", "segment"), ("users", "country")]


def variant_of(db, user_id, experiment):
    row = db.execute("SELECT variant FROM assignments WHERE user_id = ? AND experiment = ?",
                     (user_id, experiment)).fetchone()
    return row[0] if row else "control"
