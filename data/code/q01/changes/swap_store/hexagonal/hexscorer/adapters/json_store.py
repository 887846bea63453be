"""Feature-source adapter over a JSON file: one object per entity."""
import json
from pathlib import Path


class JsonFileSource:
    def __init__(self, path):
        self._rows = json.loads(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def create(cls, path, rows):
        Path(path).write_text(json.dumps(rows, sort_keys=True), encoding="utf-8")
        return cls(path)

    def row(self, entity_id):
        try:
            return dict(self._rows[entity_id])
        except KeyError:
            raise LookupError(f"no features for {entity_id!r}") from None
