"""Kubernetes: blue-green deployment as data (the hook that writes it is hooks/bluegreen.py)."""
