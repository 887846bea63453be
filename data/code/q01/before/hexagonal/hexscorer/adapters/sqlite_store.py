"""Feature-source adapter over SQLite: one (entity, feature, value) row per feature."""
import sqlite3


class SQLiteSource:
    def __init__(self, path):
        self._db = sqlite3.connect(path)

    @classmethod
    def create(cls, path, rows):
        db = sqlite3.connect(path)
        with db:
            db.execute("DROP TABLE IF EXISTS features")
            db.execute("CREATE TABLE features (entity_id TEXT, feature TEXT, value REAL)")
            db.executemany("INSERT INTO features VALUES (?, ?, ?)",
                           [(key, name, value) for key, row in rows.items() for name, value in row.items()])
        db.close()
        return cls(path)

    def row(self, entity_id):
        found = self._db.execute("SELECT feature, value FROM features WHERE entity_id = ?", (entity_id,)).fetchall()
        if not found:
            raise LookupError(f"no features for {entity_id!r}")
        return dict(found)
