"""Finds lab modules by file name (``qNN_<slug>.py``) and imports them on demand.

``built_ids()`` answers "which questions have a runnable lab" without importing
any of them, so ``archlab list`` and the explorer's home page stay instant.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from functools import lru_cache
from pathlib import Path

from .contract import Lab, ParamError

_MODULE = re.compile(r"^(q\d\d)_[a-z0-9_]+$")


@lru_cache(maxsize=1)
def _modules() -> dict[str, str]:
    here = Path(__file__).resolve().parent
    found = {}
    for info in pkgutil.iter_modules([str(here)]):
        m = _MODULE.match(info.name)
        if m:
            found[m.group(1)] = f"labs.{info.name}"
    return dict(sorted(found.items()))


def built_ids() -> list[str]:
    return list(_modules())


class UnknownLab(ParamError):
    """Raised for a question id with no built lab (or no such question)."""


@lru_cache(maxsize=None)
def get_lab(lab_id: str) -> Lab:
    lab_id = str(lab_id).lower()
    if re.fullmatch(r"q?\d{1,2}", lab_id):
        lab_id = "q%02d" % int(lab_id.lstrip("q"))
    module = _modules().get(lab_id)
    if module is None:
        raise UnknownLab(f"lab {lab_id!r} is not built; built labs: {', '.join(built_ids()) or 'none'}")
    mod = importlib.import_module(module)
    lab = getattr(mod, "LAB", None)
    if not isinstance(lab, Lab) or lab.id != lab_id:
        raise RuntimeError(f"{module} must define LAB, an instance of a Lab with id {lab_id!r}")
    return lab


def all_labs() -> list[Lab]:
    return [get_lab(i) for i in built_ids()]
