"""Route53, served by moto: the hosted zone and weighted A records the cutover moves; and, when the
lab's production runs PostgreSQL 17 (standing for a managed one), its cluster in moto's RDS API,
whose snapshots are records with no data behind them (backup.method rds, lab/migration_config.py).

Each record name gets two weighted sets: staging (weight 100, the staging ingress address) and
production (weight 0, the production ingress address), so a DNS answer really decides where a
request lands. A record set that already exists is left alone: `up` during a migration must not
reset the cutover's weights.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3

from lab.migration_config import LAB_RDS_CLUSTER, MANAGED_FROM_MAJOR
from lab.processes import Binary, Component, State, answers_http
from lab.settings import LabSettings
from pyairtable_migration.config import load_config

REGION = "us-east-1"
DUMMY_KEY = "testing"


def moto_client(settings: LabSettings, service: str = "route53") -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://{settings.host}:{settings.moto_port}",
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )


def find_zone_id(client: Any, zone_name: str) -> str | None:
    """The id of the hosted zone with exactly this name, if one exists."""
    listed = client.list_hosted_zones_by_name(DNSName=zone_name)
    for zone in listed["HostedZones"]:
        if zone["Name"] == zone_name:
            return str(zone["Id"]).rsplit("/", 1)[-1]
    return None


class Moto(Component):
    name = "moto"
    binary = Binary(
        Path(sys.executable).parent / "moto_server",
        "install moto[server] into the venv (`make bootstrap` installs requirements.txt)",
    )

    scheme = "http"

    def port(self, settings: LabSettings) -> int:
        return settings.moto_port

    def command(self, settings: LabSettings) -> list[str]:
        return [str(self.binary.path), "-H", settings.host, "-p", str(settings.moto_port)]

    def probe(self, settings: LabSettings) -> bool:
        return answers_http(f"{self.address(settings)}/moto-api/")

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        config = load_config()
        client = moto_client(settings)
        zone_name = config.dns.hosted_zone
        zone_id = find_zone_id(client, zone_name)
        if zone_id is None:
            created = client.create_hosted_zone(Name=zone_name, CallerReference=f"pyairtable-lab-{zone_name}")
            zone_id = str(created["HostedZone"]["Id"]).rsplit("/", 1)[-1]
        existing = {
            (record["Name"], record.get("SetIdentifier"))
            for record in client.get_paginator("list_resource_record_sets")
            .paginate(HostedZoneId=zone_id)
            .build_full_result()["ResourceRecordSets"]
        }
        wanted = [
            (config.environments.staging.set_identifier, 100, settings.staging_ingress_host),
            (config.environments.production.set_identifier, 0, settings.production_ingress_host),
        ]
        changes = [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": name,
                    "Type": "A",
                    "SetIdentifier": identifier,
                    "Weight": weight,
                    "TTL": settings.dns_initial_ttl,
                    "ResourceRecords": [{"Value": address}],
                },
            }
            for name in config.dns.records
            for identifier, weight, address in wanted
            if (name, identifier) not in existing
        ]
        if changes:
            client.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={"Comment": "lab seed: staging 100 / production 0", "Changes": changes},
            )
        kept = len(config.dns.records) * len(wanted) - len(changes)
        said = f"zone {zone_name} ({zone_id}): {len(changes)} weighted records created, {kept} kept"
        if settings.target_major >= MANAGED_FROM_MAJOR:
            said += "; " + seed_rds_cluster(settings)
        return said


def seed_rds_cluster(settings: LabSettings) -> str:
    """Production's cluster in moto's RDS API, keeping a week of automated backups (left as found)."""
    client = moto_client(settings, "rds")
    listed = client.describe_db_clusters()["DBClusters"]
    if any(c["DBClusterIdentifier"] == LAB_RDS_CLUSTER for c in listed):
        return f"RDS cluster {LAB_RDS_CLUSTER} kept"
    client.create_db_cluster(
        DBClusterIdentifier=LAB_RDS_CLUSTER,
        Engine="aurora-postgresql",
        EngineVersion=str(settings.target_major),
        MasterUsername="migrator",
        MasterUserPassword="moto-keeps-no-data",
        BackupRetentionPeriod=7,
    )
    return f"RDS cluster {LAB_RDS_CLUSTER} created (PostgreSQL {settings.target_major}, backups kept 7 days)"
