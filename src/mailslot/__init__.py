"""mailslot: self-hostable end-to-end encrypted multi-device messaging."""

__version__ = "0.1.0"
