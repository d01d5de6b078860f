"""The ms-swift versions this release is tested with: its internal APIs change between minor versions."""

from __future__ import annotations

from packaging.version import Version

__all__ = ["SUPPORTED_SWIFT", "check_swift_version"]

SUPPORTED_SWIFT = (Version("4.6"), Version("4.7"))  # [low, high)


def check_swift_version() -> str:
    """The installed ms-swift version; an untested one is refused with the command that fixes it."""
    import swift

    found = Version(swift.__version__)
    low, high = SUPPORTED_SWIFT
    if not (low <= found < high):
        raise ImportError(
            f"swift-lingudistill supports ms-swift >={low},<{high}, but ms-swift {found} is installed. "
            f"Fix: pip install 'ms-swift>={low},<{high}'"
        )
    return str(found)
