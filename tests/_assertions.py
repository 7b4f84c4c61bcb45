"""Assertions shared by the storage and convert tests."""

import pytest

from isonet.errors import InputError


def skip_if_permissions_ignored(directory):
    """Root (with CAP_DAC_OVERRIDE) writes into read-only directories: nothing to test then."""
    try:
        (directory / "probe").write_text("x")
    except PermissionError:
        return
    (directory / "probe").unlink()
    pytest.skip("permissions are not enforced for this user (root)")


def raises_one_line(name, func, *args, **kwargs):
    """Call func, expect an InputError with a one-line message that names `name`; return it."""
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert name in message
    assert "\n" not in message
    return message
