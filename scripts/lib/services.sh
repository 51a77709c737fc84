# Shared by scripts/test, scripts/bench and scripts/bench-ab: make sure MariaDB, Redis and
# nginx (with its stream module) are available on a Debian 12 machine.
#
# Where MariaDB and Redis already answer on their standard ports with the
# credentials the tests expect, they are used as they are. Otherwise a
# private instance is started in a temporary directory on a free port and
# stopped on exit, so a run leaves nothing running. Packages are installed
# only when a binary is missing, with service start-up disabled during the
# install (a package must not start a system-wide daemon behind our back).

SERVICES_STARTED=()
SERVICES_TMP=""

log() { printf '==> %s\n' "$*" >&2; }

need_root_for() {
    if [ "$(id -u)" -ne 0 ]; then
        log "missing: $1. Install it (as root: apt-get install $1) and run again."
        exit 1
    fi
}

install_packages() {
    local missing=()
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    [ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root_for "${missing[*]}"
    log "installing ${missing[*]}"
    # Keep the packages' init scripts from starting system-wide daemons.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$own_policy" -eq 1 ] && rm -f "$policy"
    return 0
}

free_port() { # a port nothing listens on, without needing python
    # Below the kernel's ephemeral range: a port there may be the local end
    # of some outgoing connection (thousands of them during a benchmark),
    # which nothing listens on but which a listener cannot bind either.
    local port low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 12000 ] 2>/dev/null || low=32768
    while :; do
        port=$((10000 + RANDOM % (low - 10000)))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
    done
}

services_tmp() {
    if [ -z "$SERVICES_TMP" ]; then
        SERVICES_TMP=$(mktemp -d /tmp/chat-services.XXXXXX)
        chmod 755 "$SERVICES_TMP"
    fi
}

mariadb_answers() { # url parts: host port user
    mariadb --protocol=tcp -h "$1" -P "$2" -u "$3" --connect-timeout=3 -e 'SELECT 1' >/dev/null 2>&1
}

ensure_mariadb() {
    if [ -n "${CHAT_TEST_MYSQL_URL:-}" ]; then
        log "MariaDB: using CHAT_TEST_MYSQL_URL"
        return 0
    fi
    if mariadb_answers 127.0.0.1 3306 root; then
        export CHAT_TEST_MYSQL_URL="mysql://root@127.0.0.1:3306"
        log "MariaDB: using the one on 127.0.0.1:3306"
        return 0
    fi
    services_tmp
    local dir="$SERVICES_TMP/mariadb" port
    port=$(free_port)
    mkdir -p "$dir"
    chown -R mysql:mysql "$dir" 2>/dev/null || true
    log "MariaDB: starting a private instance on 127.0.0.1:$port"
    mariadb-install-db --user=mysql --datadir="$dir/data" --auth-root-authentication-method=normal \
        --skip-test-db >"$SERVICES_TMP/mariadb-install.log" 2>&1 || {
        cat "$SERVICES_TMP/mariadb-install.log" >&2
        return 1
    }
    /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$dir/data" --bind-address=127.0.0.1 \
        --port="$port" --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
        --skip-log-bin --innodb-flush-log-at-trx-commit=2 \
        >"$SERVICES_TMP/mariadb.log" 2>&1 &
    SERVICES_STARTED+=("$!")
    for _ in $(seq 1 60); do
        mariadb_answers 127.0.0.1 "$port" root && break
        sleep 0.5
    done
    mariadb_answers 127.0.0.1 "$port" root || {
        log "MariaDB did not start:"
        tail -20 "$SERVICES_TMP/mariadb.log" >&2
        return 1
    }
    export CHAT_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port"
}

ensure_redis() {
    if [ -n "${CHAT_TEST_REDIS_URL:-}" ]; then
        log "Redis: using CHAT_TEST_REDIS_URL"
        return 0
    fi
    if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        export CHAT_TEST_REDIS_URL="redis://127.0.0.1:6379"
        log "Redis: using the one on 127.0.0.1:6379"
        return 0
    fi
    services_tmp
    local port
    port=$(free_port)
    log "Redis: starting a private instance on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$SERVICES_TMP" --logfile "$SERVICES_TMP/redis.log" &
    SERVICES_STARTED+=("$!")
    for _ in $(seq 1 40); do
        redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.25
    done
    redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG || {
        log "Redis did not start"
        return 1
    }
    export CHAT_TEST_REDIS_URL="redis://127.0.0.1:$port"
}

drop_database() { # name: drops it on CHAT_TEST_MYSQL_URL's server, if it is there
    local rest="${CHAT_TEST_MYSQL_URL#mysql://}" cred host port user
    cred="${rest%%@*}" && host="${rest#*@}" && host="${host%%/*}"
    user="${cred%%:*}" && port="${host#*:}" && host="${host%%:*}"
    if [ "$cred" != "$user" ]; then
        MYSQL_PWD="${cred#*:}" mariadb --protocol=tcp -h "$host" -P "$port" -u "$user" \
            -e "DROP DATABASE IF EXISTS \`$1\`" 2>/dev/null || true
    else
        mariadb --protocol=tcp -h "$host" -P "$port" -u "$user" \
            -e "DROP DATABASE IF EXISTS \`$1\`" 2>/dev/null || true
    fi
}

ensure_nginx() {
    export CHAT_TEST_NGINX="${CHAT_TEST_NGINX:-/usr/sbin/nginx}"
    export CHAT_TEST_NGINX_STREAM_MODULE="${CHAT_TEST_NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}"
}

stop_services() {
    local pid
    for pid in "${SERVICES_STARTED[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVICES_STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ -n "$SERVICES_TMP" ] && rm -rf "$SERVICES_TMP"
    return 0
}
