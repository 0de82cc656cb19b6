#!/usr/bin/env bash
# Makes sure the local services the tests talk to are up; starts the ones that are not.
# PostgreSQL is required (the store contract suite runs on it); the others are started
# when present so later suites find them, and a missing one only warns.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done
  return 1
}

if ! up 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! wait_port 5432; then
  echo "PostgreSQL is not listening on 127.0.0.1:5432 and could not be started" >&2
  exit 1
fi

if ! up 6379 && command -v redis-server >/dev/null; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || echo "warning: Redis did not start" >&2
fi
if ! up 5672 && command -v rabbitmq-server >/dev/null; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached || echo "warning: RabbitMQ did not start" >&2
fi
if ! up 4222 && [ -x /usr/sbin/nats-server ]; then
  echo "starting NATS"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log \
    || echo "warning: NATS did not start" >&2
fi
exit 0
