#!/usr/bin/env bash
# Makes sure PostgreSQL, NATS (with JetStream) and Redis are installed and
# running on their default local ports, and that the `smartpos` database role
# exists (a member of pg_signal_backend). Installs missing Debian packages;
# starts stopped servers; changes nothing that is already in place. Safe to
# run any number of times.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port name
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done
  log "$2 did not start listening on port $1"; return 1
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# 1. Install what is missing (Debian packages only).
missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. PostgreSQL on 127.0.0.1:5432.
if ! listening 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$version" ]; then log "no PostgreSQL cluster found under /etc/postgresql"; exit 1; fi
  log "starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for 5432 PostgreSQL
fi
if ! as_postgres psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'smartpos'" | grep -q 1; then
  log "creating the smartpos role"
  as_postgres psql -qc "CREATE ROLE smartpos LOGIN CREATEDB PASSWORD 'smartpos'"
fi
# `DROP DATABASE ... WITH (FORCE)` (the tests' clean-up, `loadgen reset`) ends
# the sessions still in the database, and refuses when one is not its own
# role's, as an autovacuum worker's is not ("must be a member of the role
# whose process is being terminated or member of pg_signal_backend"): the
# database was left behind. pg_signal_backend lets the role end non-superuser
# sessions, never a superuser's.
if ! as_postgres psql -qtAc "SELECT pg_has_role('smartpos', 'pg_signal_backend', 'MEMBER')" | grep -q t; then
  log "granting pg_signal_backend to the smartpos role"
  as_postgres psql -qc "GRANT pg_signal_backend TO smartpos"
fi

# The server settings a write-heavy workload needs (they take a reload, not a
# restart). Autovacuum must run: the outbox, the devices' counters and the
# read models update the same rows all day, and without vacuum every lookup
# walks their dead versions (a machine seen here had it off, and PostgreSQL
# cost 1.7x as much CPU per command). PostgreSQL's defaults checkpoint every
# 1 GB of WAL or 5 minutes, and the first change to each page after a
# checkpoint writes the whole page to the WAL: with a large database, under
# load, most of the WAL. Fewer checkpoints and compressed page images keep
# the cost per command flat as the data grows (bench/NOTES.md, steps 14 and
# 16). Debian's 128 MB of shared buffers hold a few minutes of this
# workload's writes; past that every index insertion evicts a page, often a
# dirty one the backend must write itself (step 24): a sixth of the memory,
# at most 4 GB, the one setting that takes a restart. Only values that
# differ are changed.
pg_setting() { # name value value-as-pg_settings-shows-it [restart]
  current=$(as_postgres psql -qtAc "SELECT setting || coalesce(unit, '') FROM pg_settings WHERE name = '$1'")
  if [ "$current" != "$3" ]; then
    log "PostgreSQL: $1 = $2 (was $current)"
    as_postgres psql -qc "ALTER SYSTEM SET $1 = '$2'" >/dev/null
    if [ "${4:-}" = restart ]; then restart=1; else reload=1; fi
  fi
}
reload=0 restart=0
pg_setting autovacuum on on
pg_setting max_wal_size 4GB 4096MB
pg_setting checkpoint_timeout 15min 900s
pg_setting wal_compression lz4 lz4
mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
buffers_mb=$(( mem_mb / 6 > 4096 ? 4096 : (mem_mb / 6 < 128 ? 128 : mem_mb / 6) ))
pg_setting shared_buffers "${buffers_mb}MB" "$(( buffers_mb * 128 ))8kB" restart
if [ "$restart" = 1 ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "restarting PostgreSQL $version (shared_buffers)"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  wait_for 5432 PostgreSQL
elif [ "$reload" = 1 ]; then
  as_postgres psql -qtAc "SELECT pg_reload_conf()" >/dev/null
fi

# 3. NATS with JetStream on 127.0.0.1:4222.
if ! listening 4222; then
  log "starting nats-server with JetStream"
  $SUDO mkdir -p /var/lib/nats-server
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for 4222 NATS
fi

# 4. Redis on 127.0.0.1:6379 (no persistence: it only fronts PostgreSQL).
if ! listening 6379; then
  log "starting redis-server"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis
fi
log "PostgreSQL, NATS and Redis are up"
