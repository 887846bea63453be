"""ArchLab labs: one module per interview question, all behind one contract.

Import a lab with ``labs.get_lab("q08")``; list what is built with
``labs.built_ids()``. Lab modules are imported lazily so that a page or a
command that needs one lab does not pay for the others (torch, training).
"""
from .registry import all_labs, built_ids, get_lab

__all__ = ["get_lab", "built_ids", "all_labs"]
