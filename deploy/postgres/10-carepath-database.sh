#!/bin/sh
# Run by the postgres image on the first start of an empty data volume only: CarePath's own
# role and database, apart from Temporal's. The password comes from the environment (.env),
# never from this file. CarePath's worker creates and migrates its tables itself.
set -eu
: "${STORE_DB_PASSWORD:?STORE_DB_PASSWORD is not set (see .env.example)}"
psql -v ON_ERROR_STOP=1 -v password="$STORE_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE carepath LOGIN PASSWORD :'password';
CREATE DATABASE carepath OWNER carepath;
SQL
