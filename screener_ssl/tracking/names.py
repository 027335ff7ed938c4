"""Names that become path parts (objectives, variants, model types): checked once, at the edge.

A sweep's objective and variant names end up in directory and file names (schemas,
checkpoints, partition pointers, run dirs). :func:`check_name` admits letters, digits and
``_.=+-``, starting with a letter or digit, with no ``..`` (no path tricks) and no ``__``
(the separator of ``<objective>__<variant>`` file names), not starting with ``tmp`` (the
prefix of in-progress writes). Path builders call it again, so no unchecked name reaches
the file system even when a caller skips the sweep.
"""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}$")


class InvalidNameError(ValueError):
    """A name that would be unsafe or ambiguous as a path part; the message says which and why."""


def check_name(value: object, what: str) -> str:
    """``value`` when it is a safe path part, else :class:`InvalidNameError` naming ``what``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        reason = "use 1-100 letters, digits and _.=+- starting with a letter or digit"
    elif ".." in value:
        reason = "'..' is not allowed"
    elif "__" in value:
        reason = "'__' separates objective and variant in file names"
    elif value.lower().startswith("tmp"):
        reason = "names starting with 'tmp' are reserved for in-progress writes"
    else:
        return value
    raise InvalidNameError(f"{what} {value!r} cannot be used in file names: {reason}")
