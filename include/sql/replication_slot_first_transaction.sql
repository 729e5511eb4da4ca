-- The slot's next transactions (about `changes` changes) as pgoutput would stream them, without
-- consuming them. Only possible while no subscriber is connected to the slot.
SELECT lsn::text, xid::text, data
FROM pg_logical_slot_peek_binary_changes(
    %(name)s, NULL, %(changes)s,
    'proto_version', '1',
    'publication_names', %(publication)s)
