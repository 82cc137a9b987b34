"""Resumable results: an embedded SQLite store keyed by sample content, model and settings."""

from genprm.store.sqlite import RunStore, settings_key

__all__ = ["RunStore", "settings_key"]
