"""The one argument check every engine makes before it swaps an account's device list.

The services decide which version may follow which (exactly the current one plus one); a store
only refuses what would corrupt its history, which is keyed by version: a list published at or
below the version it replaces.
"""

from __future__ import annotations

from mailslot.errors import InputError

__all__ = ["check_versions"]


def check_versions(expected_version: int, new_version: int) -> None:
    """``InputError`` unless ``new_version`` comes after ``expected_version``."""
    if new_version <= expected_version:
        raise InputError(f"the new device list version {new_version} is not above {expected_version}")
