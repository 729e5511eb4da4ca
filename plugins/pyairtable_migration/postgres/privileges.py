"""Which PostgreSQL this is (RDS/Aurora, Cloud SQL, Azure or plain) and whether the migration's
role may do, there, what the migration does on that side, without being a superuser.

Managed services have no superuser: their admin role (`rds_superuser`, `cloudsqlsuperuser`,
`azure_pg_admin`) and, from PostgreSQL 16, `pg_create_subscription` grant what logical replication
needs. Each side both publishes and subscribes (forward replication from the source, reverse
replication from the target for a lossless rollback), so each side's role is checked for both.
The rules are pure functions over the facts `include/sql/preflight_privileges.sql` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyairtable_migration.hooks.database import display_identifier

PG_CREATE_SUBSCRIPTION = "pg_create_subscription"
FIRST_WITH_SUBSCRIPTION_ROLE = 160000


@dataclass(frozen=True)
class Flavor:
    """A kind of server: its admin role, the parameter that turns logical decoding on, how to set it."""

    name: str
    admin_role: str | None
    parameter: str
    parameter_fix: str
    replication_role: str | None = None  # a role whose membership grants REPLICATION


RDS = Flavor(
    "Amazon RDS/Aurora",
    "rds_superuser",
    "rds.logical_replication",
    "set rds.logical_replication = 1 in the DB (cluster) parameter group, then reboot the writer",
    replication_role="rds_replication",
)
CLOUD_SQL = Flavor(
    "Cloud SQL",
    "cloudsqlsuperuser",
    "cloudsql.logical_decoding",
    "set the database flag cloudsql.logical_decoding=on (gcloud sql instances patch ... "
    "--database-flags=cloudsql.logical_decoding=on), which restarts the instance",
)
AZURE = Flavor(
    "Azure Database for PostgreSQL",
    "azure_pg_admin",
    "wal_level",
    "set the server parameter wal_level = logical (az postgres flexible-server parameter set "
    "--name wal_level --value logical), then restart the server",
)
PLAIN = Flavor(
    "PostgreSQL",
    None,
    "wal_level",
    "set wal_level = logical (ALTER SYSTEM SET wal_level = logical), then restart the server",
)


def flavor(fact: Mapping[str, Any]) -> Flavor:
    """Told by the admin roles a managed service creates and the parameters only it defines."""
    roles = set(fact["roles_present"])
    # A placeholder parameter once set and then reset reads as '' (not NULL) until a restart.
    if "rds_superuser" in roles or fact["rds_logical_replication"]:
        return RDS
    if "cloudsqlsuperuser" in roles or fact["cloudsql_logical_decoding"]:
        return CLOUD_SQL
    if "azure_pg_admin" in roles:
        return AZURE
    return PLAIN


def parameter_on(value: str | None) -> bool:
    return (value or "").lower() in {"1", "on", "true", "yes"}


def privilege_problems(side: str, fact: Mapping[str, Any], *, peer_password: bool = True) -> list[str]:
    """What this side's role lacks to publish (FOR TABLE, as the owner of every table; REPLICATION
    for the peer's slot) and to subscribe (superuser, the flavor's admin role or, 16+,
    pg_create_subscription with CREATE on the database), and the flavor's logical-decoding parameter.

    `peer_password`: whether the connection the subscription will use to reach the other side
    carries a password; a non-superuser's subscription must (password_required).
    """
    kind = flavor(fact)
    role = display_identifier(fact["role_name"])
    member_of = set(fact["member_of"])
    version = fact["server_version_num"]
    problems: list[str] = []
    where = f"{side} ({kind.name} {version // 10000})"

    if kind.parameter != "wal_level" and not parameter_on(fact[kind.parameter.replace(".", "_")]):
        problems.append(
            f"{where}: parameter {kind.parameter} is {fact[kind.parameter.replace('.', '_')] or 'unset'}: "
            f"logical decoding is off; {kind.parameter_fix}"
        )
    if fact["is_superuser"]:
        return problems

    may_subscribe_by = [r for r in (kind.admin_role, PG_CREATE_SUBSCRIPTION) if r in member_of]
    if PG_CREATE_SUBSCRIPTION in may_subscribe_by and version < FIRST_WITH_SUBSCRIPTION_ROLE:
        may_subscribe_by.remove(PG_CREATE_SUBSCRIPTION)
    step = "create the subscriptions (forward replication on the target, reverse replication on the source)"
    if not may_subscribe_by:
        grants = []
        if kind.admin_role:
            grants.append(f"GRANT {kind.admin_role} TO {role}")
        if version >= FIRST_WITH_SUBSCRIPTION_ROLE:
            grants.append(f"GRANT {PG_CREATE_SUBSCRIPTION} TO {role}")
        if grants:
            fix = " or ".join(grants)
        else:
            fix = (
                f"PostgreSQL {version // 10000} allows only superusers to subscribe: ALTER ROLE {role} "
                "SUPERUSER, or migrate to a 16+ server where pg_create_subscription exists"
            )
        problems.append(f"{where}: role {role} may not {step}: {fix}")
    elif may_subscribe_by == [PG_CREATE_SUBSCRIPTION] and not fact["can_create_in_database"]:
        problems.append(
            f"{where}: role {role} is a member of {PG_CREATE_SUBSCRIPTION} but lacks CREATE on the database, "
            f"which {step} also needs: GRANT CREATE ON DATABASE <database> TO {role}"
        )
    if not peer_password:
        problems.append(
            f"{where}: role {role} is not a superuser, so its subscription has password_required = true: the "
            "connection to the other side must carry a password (set it on that Airflow connection)"
        )

    replication_by = fact["has_replication"] or (kind.replication_role in member_of)
    if not replication_by:
        via = f" (or GRANT {kind.replication_role} TO {role})" if kind.replication_role else ""
        problems.append(
            f"{where}: role {role} lacks the REPLICATION attribute, which the other side's subscription "
            f"needs to stream from this side's replication slot: ALTER ROLE {role} REPLICATION{via}"
        )
    not_owned = list(fact["tables_not_owned"])
    if not_owned:
        sample = ", ".join(not_owned[:5]) + (f" and {len(not_owned) - 5} more" if len(not_owned) > 5 else "")
        problems.append(
            f"{where}: role {role} does not own {len(not_owned)} table(s) ({sample}): without superuser the "
            "publication lists the tables (FOR TABLE, owner only), REPLICA IDENTITY FULL and the apply "
            f"worker need the owner's rights: ALTER TABLE ... OWNER TO {role}, or GRANT <owner> TO {role}"
        )
    sequences = list(fact["sequences_not_updatable"])
    if sequences:
        problems.append(
            f"{where}: role {role} may not UPDATE sequence(s) {', '.join(sequences[:5])}: the switchover's "
            f"sequence sync calls setval on them: GRANT UPDATE ON SEQUENCE ... TO {role}"
        )
    return problems
