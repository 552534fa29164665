"""Conversation stores: the embedded SQLite store (default) and MongoDB."""
