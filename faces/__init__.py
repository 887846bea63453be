"""ArchLab's faces: the command line, the explorer's helpers, the notebook generator.

Faces render labs and never compute a lab's numbers; they reach the engine
(``sim``) only through ``labs``.
"""
