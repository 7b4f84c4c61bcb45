"""Exceptions whose one-line message is meant for the user: what was wrong, where, and the fix."""


class InputError(ValueError):
    """Bad user input (file, array or configuration value).

    The message is one line that names the offending file or key and says how to fix it, e.g.
    ``"data/a.tif: image is 2D (512, 512); isonet needs a 3D z-stack (z, y, x)"``.
    """
