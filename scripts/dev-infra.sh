#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672) and PostgreSQL (127.0.0.1:5432) answer, for development,
# tests and CI. Used by `make run`, `make test` and .ci/run.
#
#   scripts/dev-infra.sh            already running? done. Else Docker if an engine answers,
#                                   else the servers installed on this machine.
#   scripts/dev-infra.sh --local    only the servers installed on this machine (CI).
#   scripts/dev-infra.sh --docker   only Docker (`docker compose up -d --wait rabbitmq postgres`).
#   scripts/dev-infra.sh --tests    what the tests need: nothing when HERALD_TEST_AMQP_URL and
#                                   HERALD_TEST_DATABASE_URL are set or a Docker engine answers
#                                   (tests/support/infra.py then uses testcontainers), else --local.
#
# HERALD_INFRA_TIMEOUT (seconds, default 120) bounds the wait.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=auto
case "${1:-}" in
    "") ;;
    --local) MODE=local ;;
    --docker) MODE=docker ;;
    --tests) MODE=tests ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--local|--docker|--tests]" >&2; exit 2 ;;
esac
TIMEOUT="${HERALD_INFRA_TIMEOUT:-120}"

say() { printf '[dev-infra] %s\n' "$*"; }

port_open() {
    timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# The broker answers the AMQP 0-9-1 protocol header with a Connection.Start method frame (type 1).
amqp_ready() {
    local reply
    reply=$(timeout 5 bash -c \
        'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\x00\x00\x09\x01" >&3 && head -c 1 <&3 | od -An -tx1' \
        2>/dev/null) || return 1
    [[ "${reply// /}" == "01" ]]
}

postgres_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432 -t 3
    else
        port_open 5432
    fi
}

all_ready() { amqp_ready && postgres_ready; }

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT))
    until all_ready; do
        if ((SECONDS >= deadline)); then
            amqp_ready || say "RabbitMQ does not answer on 127.0.0.1:5672 after ${TIMEOUT}s"
            postgres_ready || say "PostgreSQL does not answer on 127.0.0.1:5432 after ${TIMEOUT}s"
            return 1
        fi
        sleep 1
    done
    say "RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 are ready"
}

docker_answers() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

start_with_docker() {
    say "starting rabbitmq and postgres with Docker Compose"
    if docker compose version >/dev/null 2>&1; then
        docker compose up -d --wait rabbitmq postgres
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose up -d rabbitmq postgres
    else
        say "the Docker engine answers but Docker Compose is missing (install docker-compose-plugin)"
        return 1
    fi
}

local_installed() {
    command -v rabbitmq-server >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1 \
        && [[ -d /etc/postgresql ]] && [[ -n "$(ls -A /etc/postgresql)" ]]
}

start_local() {
    if ! amqp_ready; then
        if port_open 5672 || pgrep -f 'beam.smp.*-s rabbit' >/dev/null 2>&1; then
            # Never start a second node beside one that is booting (or slow to answer).
            say "RabbitMQ is starting"
        else
            say "starting RabbitMQ: rabbitmq-server -detached"
            # Each quorum queue holds file handles: give the broker all the process may have.
            (ulimit -n "$(ulimit -Hn)" 2>/dev/null; rabbitmq-server -detached) \
                || say "could not start RabbitMQ (as root: rabbitmq-server -detached, or systemctl start rabbitmq-server)"
        fi
    fi
    if ! postgres_ready; then
        local version
        version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf "%f\n" | sort -V | tail -n 1)
        say "starting PostgreSQL: pg_ctlcluster --skip-systemctl-redirect ${version} main start"
        pg_ctlcluster --skip-systemctl-redirect "${version}" main start \
            || say "could not start PostgreSQL (as root: pg_ctlcluster ${version} main start, or systemctl start postgresql)"
    fi
}

explain_missing() {
    cat >&2 <<'EOF'
[dev-infra] Herald needs RabbitMQ and PostgreSQL, and neither a Docker engine nor local servers
[dev-infra] were found. Install one of:
[dev-infra]   - the servers (Debian/Ubuntu): sudo apt-get install rabbitmq-server postgresql
[dev-infra]     (PostgreSQL must trust, or have a password in HERALD_DATABASE_URL for, the user
[dev-infra]      postgres on 127.0.0.1; see docs/configuration.md)
[dev-infra]   - Docker with the Compose plugin: https://docs.docker.com/engine/install/
EOF
}

if [[ "$MODE" == tests ]]; then
    if [[ -n "${HERALD_TEST_AMQP_URL:-}" && -n "${HERALD_TEST_DATABASE_URL:-}" ]]; then
        say "tests use HERALD_TEST_AMQP_URL and HERALD_TEST_DATABASE_URL"
        exit 0
    fi
    if docker_answers; then
        say "a Docker engine answers: tests start their own containers"
        exit 0
    fi
    MODE=local
fi

if all_ready; then
    say "RabbitMQ and PostgreSQL already answer on 127.0.0.1:5672 and :5432"
    exit 0
fi

case "$MODE" in
    docker)
        docker_answers || { say "no Docker engine answers (docker info failed)"; exit 1; }
        start_with_docker
        ;;
    local)
        local_installed || { explain_missing; exit 1; }
        start_local
        ;;
    auto)
        if local_installed && { port_open 5672 || port_open 5432; }; then
            start_local # one of them runs here: start the other one here too
        elif docker_answers; then
            start_with_docker
        elif local_installed; then
            start_local
        else
            explain_missing
            exit 1
        fi
        ;;
esac
wait_ready
