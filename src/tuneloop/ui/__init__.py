"""The web dashboard over the run store."""

from tuneloop.ui.app import create_app

__all__ = ["create_app"]
