"""Resumable results: an embedded SQLite store keyed by sample content, model and settings."""

from genprm.store.sqlite import STORE_FILE, RunStore, settings_key

__all__ = ["STORE_FILE", "RunStore", "settings_key"]
