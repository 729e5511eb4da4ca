-- Move a sequence forward to the value given (the next nextval returns value + increment).
SELECT setval(%(sequence)s::regclass, %(value)s, true)
