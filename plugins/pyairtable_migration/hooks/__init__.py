"""Hooks: each owns one kind of client and its connection."""
