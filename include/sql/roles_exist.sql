-- Which of these roles exist here?
SELECT rolname FROM pg_roles WHERE rolname = ANY(%(names)s)
