"""Where ArchLab keeps what it computes once per machine (trained models, attack curves).

Kept free of heavy imports so that reading a cached result never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$ARCHLAB_CACHE``, else ``$XDG_CACHE_HOME/archlab``, else ``~/.cache/archlab``."""
    env = os.environ.get("ARCHLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "archlab"
