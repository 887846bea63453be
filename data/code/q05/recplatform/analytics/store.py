"""The analytics context's event log, plus the fields it copies to report without calling anyone."""

TABLES = {
    "events": [("event_id", "INTEGER PRIMARY KEY"), ("user_id", "INTEGER"), ("item_id", "INTEGER"),
               ("kind", "TEXT"), ("day", "INTEGER")],
}
# (source table, field) copied into this context's own replica tables, most useful first
COPIES = [("items", "category"), ("users", "segment"), ("users", "country"), ("items", "price")]


def popular(db, limit):
    return db.execute("SELECT item_id, COUNT(*) AS n FROM events WHERE kind = 'click' GROUP BY item_id "
                      "ORDER BY n DESC, item_id LIMIT ?", (limit,)).fetchall()
