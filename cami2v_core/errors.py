"""The one base of every error the project raises for a user to act on, so a front end catches one type."""

from __future__ import annotations


class CamI2VError(Exception):
    """Something a user gave or did (a file, a value, a command) cannot be used; the message says what to do."""
