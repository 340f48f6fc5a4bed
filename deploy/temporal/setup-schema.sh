#!/bin/sh
# One-shot (admin-tools image): Temporal's persistence and visibility databases and schemas
# on PostgreSQL. Safe to run on every `docker compose up`: a database is created and set up
# once; update-schema applies only the versions it does not have yet (a server upgrade).
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
schemas=/etc/temporal/schema/postgresql/v12
sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" \
        -p "${DB_PORT:-5432}" "$@"
}
for db in temporal:temporal temporal_visibility:visibility; do
    name=${db%%:*}
    kind=${db#*:}
    if sql --db "$name" create; then
        sql --db "$name" setup-schema -v 0.0
    fi
    sql --db "$name" update-schema -d "$schemas/$kind/versioned"
done
echo "Temporal schemas ready"
