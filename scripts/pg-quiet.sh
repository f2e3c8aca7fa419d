#!/usr/bin/env bash
# VACUUM ANALYZE and CHECKPOINT the database named by DATABASE_URL, as the
# local superuser (the application's role may not CHECKPOINT). The benchmark
# runs it before each fixed-rate run and between the steps of each `loadgen
# max` search, so that every measurement starts from the same quiet database
# rather than from the autovacuum and dirty pages the one before left behind.
set -euo pipefail
db=${DATABASE_URL:?DATABASE_URL names the database}
db=${db##*/}
db=${db%%\?*}
sql=(-v ON_ERROR_STOP=1 -qd "$db" -c "VACUUM (ANALYZE)" -c CHECKPOINT)
if [ "$(id -u)" -eq 0 ]; then
  exec runuser -u postgres -- psql "${sql[@]}"
else
  exec sudo -n -u postgres psql "${sql[@]}"
fi
