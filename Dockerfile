# The official Airflow image extended with this project's pinned requirements, as Airflow's docs
# recommend (https://airflow.apache.org/docs/docker-stack/build.html). docker-compose.yaml builds it.
FROM apache/airflow:3.3.2-python3.11

# pg_dump / pg_restore / psql of PostgreSQL 15 for the schema copy, at the path
# include/migration.yaml's `database.pg_bin_dir` names (/usr/lib/postgresql/<major>/bin).
# The image already carries the PostgreSQL apt repository. Match the major to the source database.
ARG PG_CLIENT_MAJOR=15
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_CLIENT_MAJOR}" \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER airflow

# requirements.txt is the project's complete pinned set. `apache-airflow==${AIRFLOW_VERSION}` keeps
# pip from moving Airflow off the image's version; the Celery provider (CeleryExecutor) and the FAB
# provider (auth manager, `airflow users create`) come with the image and are named so that pip
# resolves the pins together with what they need.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        apache-airflow-providers-celery \
        apache-airflow-providers-fab \
        -r /tmp/requirements.txt
