"""Operators: each one thin and owning one step; hooks own clients, triggers own waiting."""
