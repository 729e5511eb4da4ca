-- The subscription: initial copy of every table, then streaming. A failing change disables it
-- (disable_on_error) so the lag gate reports it instead of the worker retrying forever.
CREATE SUBSCRIPTION {subscription}
    CONNECTION %(conninfo)s
    PUBLICATION {publication}
    WITH (copy_data = true, create_slot = true, enabled = true, slot_name = %(slot)s,
          disable_on_error = true, binary = false)
