"""Name -> class registries, so that command-line flags can pick components."""


class Registry:
    """Maps a name to a class. ``register`` is used as a class decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes = {}

    def register(self, name: str):
        def add(cls):
            if name in self._classes:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._classes[name] = cls
            return cls
        return add

    def get_by_name(self, name: str):
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes))
            raise ValueError(f"unknown {self.kind} '{name}' (known: {known})") from None

    def get_all_names(self):
        return sorted(self._classes)

    def __contains__(self, name):
        return name in self._classes
