"""The one exception base of the toolkit. Plain Python: imports nothing, so every module may use it.

Every error the toolkit raises on purpose derives from ``RomError``; its message names the file, key or value
and what was expected, so the ``rom`` command line (and ``python -m analysis``) prints it as one line instead
of a traceback. Each error class also keeps the built-in base that callers catch (``ConfigError`` is a
``ValueError``, ``CheckpointError`` a ``RuntimeError``, ...).
"""

from __future__ import annotations


class RomError(Exception):
    """Base of the toolkit's errors: a bad input, file or environment, explained in the message."""
