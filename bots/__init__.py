"""Switchboard runtime: load artifacts, understand, decide, act, store, count."""
