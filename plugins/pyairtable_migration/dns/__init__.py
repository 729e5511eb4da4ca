"""DNS engines: Route53 weighted records as data, and the changes that reach wanted weights and TTLs."""
