"""The recommendation context's own scores, and the profile and catalogue fields it keeps copies of."""

TABLES = {
    "scores": [("user_id", "INTEGER"), ("item_id", "INTEGER"), ("score", "REAL")],
}
COPIES = [("users", "preferred_category"), ("items", "category"), ("users", "segment"), ("items", "price"),
          ("items", "title")]


def stored_scores(db, user_id, limit):
    return db.execute("SELECT item_id, score FROM scores WHERE user_id = ? ORDER BY score DESC, item_id LIMIT ?",
                      (user_id, limit)).fetchall()
