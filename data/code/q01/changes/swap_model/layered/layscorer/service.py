"""Business layer: validates rows, reads them from SQLite and scores them with the PyTorch model."""
import math
import sqlite3

import torch

FEATURES = ("radius", "texture", "smoothness", "concave_points")
RANGES = {
    "radius": (0.0, 50.0),
    "texture": (0.0, 60.0),
    "smoothness": (0.0, 1.0),
    "concave_points": (0.0, 1.0),
}
THRESHOLD = 0.5


class ScoringService:
    def __init__(self, db_path, model_path):
        self.db = sqlite3.connect(db_path)
        saved = torch.load(model_path, weights_only=True)
        self.mean, self.scale = saved["mean"], saved["scale"]
        self.model = torch.nn.Linear(len(self.mean), 1)
        self.model.load_state_dict(saved["state"])
        self.model.eval()

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
        with torch.no_grad():
            x = (torch.tensor(vector, dtype=torch.float32) - self.mean) / self.scale
            score = float(torch.sigmoid(self.model(x))[0])
        return entity_id, score, score >= THRESHOLD
