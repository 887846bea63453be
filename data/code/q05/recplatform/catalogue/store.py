"""The catalogue context's own table of items."""

TABLES = {
    "items": [("item_id", "INTEGER PRIMARY KEY"), ("title", "TEXT"), ("category", "TEXT"), ("price", "REAL"),
              ("description", "TEXT")],
}
COPIES = []


def items_in(db, category, limit):
    return db.execute("SELECT item_id, title, price FROM items WHERE category = ? ORDER BY item_id LIMIT ?",
                      (category, limit)).fetchall()
