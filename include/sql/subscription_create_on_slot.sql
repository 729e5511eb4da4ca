-- Reverse replication: a subscription on a slot created earlier (while writers were paused), so
-- it streams every change made after that point and copies nothing.
CREATE SUBSCRIPTION {subscription}
    CONNECTION %(conninfo)s
    PUBLICATION {publication}
    WITH (copy_data = false, create_slot = false, enabled = true, slot_name = %(slot)s,
          disable_on_error = true)
