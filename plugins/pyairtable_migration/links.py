"""Extra links on task instances: where the on-call engineer looks next.

In Airflow 3 the worker computes each link when the task finishes (task runner `finalize` calls
`get_link` and stores the URL in XCom under `link.xcom_key`), and the UI reads that XCom back; so
these classes need no plugin registration, only to be listed in an operator's
`operator_extra_links`. A link that cannot be built is an empty string, never a failed task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from pyairtable_migration.dns.weights import console_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey


class XComValueLink(BaseOperatorLink):
    """A link built from one value the task stored (`persist`) in its XCom under `key`; none until then."""

    key: ClassVar[str]

    @classmethod
    def persist(cls, context: Context, value: str) -> None:
        context["ti"].xcom_push(key=cls.key, value=value)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            value = XCom.get_value(key=self.key, ti_key=ti_key)
        except Exception:
            return ""
        return self.url(str(value)) if value else ""

    def url(self, value: str) -> str:
        return value


class HostedZoneLink(XComValueLink):
    """The hosted zone's records in the AWS console (the operator stores the zone id)."""

    name = "Route53 hosted zone"
    key = "route53_hosted_zone_id"

    def url(self, value: str) -> str:
        return console_url(value)


class PrometheusGraphLink(BaseOperatorLink):
    """The Prometheus graph of one gate query, rendered as the gate runs it (production labels).

    The operator provides `prometheus_conn_id`, `prometheus_labels`, `window` and the query
    template in the attribute named by `query_field`.
    """

    name = "Prometheus"
    query_field: ClassVar[str] = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from pyairtable_migration.hooks.prometheus import PrometheusHook, render_query

        attributes: Any = operator
        try:
            query = render_query(
                getattr(attributes, self.query_field), attributes.prometheus_labels, attributes.window
            )
            return PrometheusHook(attributes.prometheus_conn_id).graph_url(query)
        except Exception:
            return ""


class ErrorRatioGraphLink(PrometheusGraphLink):
    name = "Prometheus: production error ratio"
    query_field = "error_ratio_query"


class P99GraphLink(PrometheusGraphLink):
    name = "Prometheus: production p99"
    query_field = "p99_query"


def dashboard_url(template: str, namespace: str, service: str, color: str | None) -> str:
    """`blue_green.dashboard_url_template` with $namespace, $deployment, $service, $color filled in."""
    from string import Template
    from urllib.parse import quote

    values = {
        "namespace": namespace,
        "service": service,
        "color": color or "",
        "deployment": f"{service}-{color}" if color else service,
    }
    return Template(template).safe_substitute({k: quote(v, safe="") for k, v in values.items()})


class ServiceDashboardLink(BaseOperatorLink):
    """A service's dashboard, on every task of its group (blue_green.dashboard_url_template).

    The operator provides `dashboard_url_template`, `namespace`, `service_name` and, once it has
    read the cluster, `dashboard_color`: the color the task acted on (its Deployment).
    """

    name = "Service dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        attributes: Any = operator
        try:
            return dashboard_url(
                attributes.dashboard_url_template,
                attributes.namespace,
                attributes.service_name,
                getattr(attributes, "dashboard_color", None),
            )
        except Exception:
            return ""


class MigrationReportLink(XComValueLink):
    """The run's migration report (HTML), as the report task wrote it: served by Airflow's api-server
    (`/pyairtable-reports/<file>`, see reports_app.py) or `validation.report_base_url`/<file>."""

    name = "Migration report"
    key = "migration_report_url"
