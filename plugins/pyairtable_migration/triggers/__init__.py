"""Triggers: all the waiting, done on the triggerer (which imports them from plugins/)."""
