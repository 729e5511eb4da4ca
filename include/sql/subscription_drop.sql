-- Drops the subscription and its replication slot on the publisher.
DROP SUBSCRIPTION IF EXISTS {subscription}
