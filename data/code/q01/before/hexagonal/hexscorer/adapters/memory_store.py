"""Feature-source adapter over a dict held in memory."""


class MemorySource:
    def __init__(self, rows):
        self._rows = {key: dict(row) for key, row in rows.items()}

    def row(self, entity_id):
        try:
            return dict(self._rows[entity_id])
        except KeyError:
            raise LookupError(f"no features for {entity_id!r}") from None
