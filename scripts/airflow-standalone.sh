#!/usr/bin/env bash
# `make airflow`: Airflow standalone serving this project's dags/ and plugins/, examples off.
# The Makefile exports AIRFLOW_HOME, the folders and PATH (the venv first) before calling this.
set -euo pipefail

port="${AIRFLOW_PORT:-8080}"
mkdir -p "$AIRFLOW_HOME"
export AIRFLOW__API__PORT="$port"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=60

airflow standalone > "$AIRFLOW_HOME/standalone.log" 2>&1 &
standalone=$!
trap 'kill "$standalone" 2>/dev/null; wait "$standalone" 2>/dev/null' INT TERM EXIT

echo "starting Airflow (log: $AIRFLOW_HOME/standalone.log) ..."
for _ in $(seq 1 180); do
    if ! kill -0 "$standalone" 2>/dev/null; then
        echo "airflow standalone exited; last lines of its log:" >&2
        tail -20 "$AIRFLOW_HOME/standalone.log" >&2
        exit 1
    fi
    if curl -fsS "http://localhost:$port/api/v2/monitor/health" > /dev/null 2>&1 \
        && [ -s "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated" ]; then
        password=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' \
            "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated")
        echo "Airflow UI: http://localhost:$port   login: admin / $password"
        echo "DAG: pyairtable_production_migration (Ctrl-C stops Airflow)"
        wait "$standalone"
        exit $?
    fi
    sleep 1
done
echo "Airflow did not answer on port $port within 180 s; see $AIRFLOW_HOME/standalone.log" >&2
exit 1
