"""Business layer: validates rows, reads them from SQLite and scores them with the scikit-learn model."""
import math
import pickle
import sqlite3

from sklearn.pipeline import Pipeline

FEATURES = ("radius", "texture", "smoothness", "concave_points")
RANGES = {
    "radius": (0.0, 50.0),
    "texture": (0.0, 60.0),
    "smoothness": (0.0, 1.0),
    "concave_points": (0.0, 1.0),
}
THRESHOLD = 0.35
CONCAVITY_LIMIT = 0.15


class ScoringService:
    def __init__(self, db_path, model_path):
        self.db = sqlite3.connect(db_path)
        with open(model_path, "rb") as fh:
            self.model = pickle.load(fh)
        if not isinstance(self.model, Pipeline):
            raise TypeError(f"{model_path} does not hold a scikit-learn Pipeline")

    def save_rows(self, rows):
        with self.db:
            self.db.execute("DROP TABLE IF EXISTS features")
            self.db.execute("CREATE TABLE features (entity_id TEXT, feature TEXT, value REAL)")
            self.db.executemany("INSERT INTO features VALUES (?, ?, ?)",
                                [(key, name, value) for key, row in rows.items() for name, value in row.items()])

    def load_row(self, entity_id):
        found = self.db.execute("SELECT feature, value FROM features WHERE entity_id = ?", (entity_id,)).fetchall()
        if not found:
            raise LookupError(f"no features for {entity_id!r}")
        return dict(found)

    def check_row(self, row):
        vector = []
        for name in FEATURES:
            if name not in row:
                raise ValueError(f"feature {name} is missing")
            value = float(row[name])
            low, high = RANGES[name]
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"feature {name}={value} is outside [{low}, {high}]")
            vector.append(value)
        return vector

    def score(self, entity_id):
        vector = self.check_row(self.load_row(entity_id))
        positive = list(self.model.classes_).index(1)
        score = float(self.model.predict_proba([vector])[0][positive])
        flagged = score >= THRESHOLD or vector[FEATURES.index("concave_points")] > CONCAVITY_LIMIT
        return entity_id, score, flagged
