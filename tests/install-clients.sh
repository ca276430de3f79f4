#!/usr/bin/env bash
# Installs the real Kafka and AMQP clients the suites drive, and RabbitMQ (the reference broker of
# the AMQP differential suite), idempotently (each step is skipped when what it installs is already
# there), into repo-local places that git ignores:
#   kcat                                          apt (system package; the old librdkafka 2.0.2)
#   rabbitmq-server                               apt (system package; 3.10 on Debian 12); never
#                                                 started here: tests/src/rabbitmq.rs starts its own
#                                                 node on 5673, 5672 is Weir's default AMQP port
#   confluent-kafka==2.16.1 kafka-python==3.0.12  pip, in the venv tests/.venv
#   pika==1.4.4 celery==5.7.0 (kombu, amqp 5.4.2) pip, in the venv tests/.venv
#   pytest==8.0.0 pytest-rerunfailures==14.0      pip: what py-amqp's integration suite runs under
#   prometheus-client==0.26.0                     pip: the real text-format parser of metrics.rs
#   amqp==5.4.2 sdist                             pip download, unpacked in tests/.py-amqp/ for its
#                                                 t/integration suite (the wheel does not ship t/)
#   kafkajs@2.2.4 amqplib@2.3.1                   npm, in tests/node_modules (tests/package.json)
# Runs unattended (CI=true, no stdin) on Debian 12 as root; uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON_PACKAGES=(confluent-kafka==2.16.1 kafka-python==3.0.12 pika==1.4.4 celery==5.7.0 kombu==5.7.0
    amqp==5.4.2 vine==5.1.0 pytest==8.0.0 pytest-rerunfailures==14.0 prometheus-client==0.26.0)
KAFKAJS_VERSION=2.2.4
AMQPLIB_VERSION=2.3.1
PY_AMQP_VERSION=5.4.2

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then
        $sudo apt-get update -qq
        apt_updated=yes
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v kcat >/dev/null; then
    echo "install-clients: kcat (apt)"
    apt_install kcat
fi

if [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "install-clients: rabbitmq-server (apt)"
    # Debian's maintainer scripts would start the packaged node on 5672, Weir's default port: a
    # policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d from starting it.
    policy_added=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
        policy_added=yes
    fi
    apt_install rabbitmq-server
    if [ "$policy_added" = yes ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
fi

python_ready() {
    .venv/bin/python - "${PYTHON_PACKAGES[@]}" <<'PY' 2>/dev/null
import importlib.metadata as metadata
import sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    assert metadata.version(name) == version, pin
PY
}
if ! python_ready; then
    if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "install-clients: python3-venv (apt)"
        apt_install python3 python3-venv
    fi
    if ! .venv/bin/python -V >/dev/null 2>&1; then
        python3 -m venv --clear .venv
    fi
    echo "install-clients: ${PYTHON_PACKAGES[*]} (pip, tests/.venv)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
    python_ready
fi

# py-amqp's own integration suite ships only in its sdist; run unmodified by tests/tests/py_amqp.rs.
py_amqp_dir=".py-amqp/amqp-$PY_AMQP_VERSION"
if [ ! -f "$py_amqp_dir/t/integration/test_rmq.py" ]; then
    echo "install-clients: amqp==$PY_AMQP_VERSION sdist (pip download, tests/$py_amqp_dir)"
    rm -rf .py-amqp
    mkdir -p .py-amqp
    .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-binary :all: \
        --no-deps --dest .py-amqp "amqp==$PY_AMQP_VERSION"
    tar -xzf ".py-amqp/amqp-$PY_AMQP_VERSION.tar.gz" -C .py-amqp
    test -f "$py_amqp_dir/t/integration/test_rmq.py"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-clients: nodejs npm (apt)"
    apt_install nodejs npm
fi
installed_kafkajs=$(node -p 'require("./node_modules/kafkajs/package.json").version' 2>/dev/null || true)
installed_amqplib=$(node -p 'require("./node_modules/amqplib/package.json").version' 2>/dev/null || true)
if [ "$installed_kafkajs" != "$KAFKAJS_VERSION" ] || [ "$installed_amqplib" != "$AMQPLIB_VERSION" ]; then
    echo "install-clients: kafkajs@$KAFKAJS_VERSION amqplib@$AMQPLIB_VERSION (npm, tests/node_modules)"
    npm install --no-audit --no-fund --loglevel=error
fi
echo "install-clients: kcat $(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\) .*/\1 on librdkafka \2/p');" \
    "$(.venv/bin/python -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.__version__, "on librdkafka", confluent_kafka.libversion()[0] + ";", "kafka-python", kafka.__version__ + ";")')" \
    "kafkajs $(node -p 'require("./node_modules/kafkajs/package.json").version');" \
    "$(.venv/bin/python -c 'import pika, celery, amqp; print("pika", pika.__version__ + ";", "celery", celery.__version__ + ";", "amqp", amqp.__version__ + ";")')" \
    "amqplib $(node -p 'require("./node_modules/amqplib/package.json").version');" \
    "rabbitmq-server $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?')"
