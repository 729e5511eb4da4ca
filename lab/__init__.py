"""The local lab: staging and production stand-ins as real processes on loopback."""
