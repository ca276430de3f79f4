#!/usr/bin/env bash
# Installs the real Kafka clients the suites drive, idempotently (each step is skipped when what it
# installs is already there), into repo-local places that git ignores:
#   kcat                                          apt (system package; the old librdkafka 2.0.2)
#   confluent-kafka==2.16.1 kafka-python==3.0.12  pip, in the venv tests/.venv
#   pika==1.4.4                                   pip, in the venv (AMQP 0-9-1)
#   kafkajs@2.2.4                                 npm, in tests/node_modules (tests/package.json)
# Runs unattended (CI=true, no stdin) on Debian 12 as root; uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON_PACKAGES=(confluent-kafka==2.16.1 kafka-python==3.0.12 pika==1.4.4)
KAFKAJS_VERSION=2.2.4

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

python_ready() {
    .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata as metadata
assert metadata.version("confluent-kafka") == "2.16.1"
assert metadata.version("kafka-python") == "3.0.12"
assert metadata.version("pika") == "1.4.4"
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

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-clients: nodejs npm (apt)"
    apt_install nodejs npm
fi
installed_kafkajs=$(node -p 'require("./node_modules/kafkajs/package.json").version' 2>/dev/null || true)
if [ "$installed_kafkajs" != "$KAFKAJS_VERSION" ]; then
    echo "install-clients: kafkajs@$KAFKAJS_VERSION (npm, tests/node_modules)"
    npm install --no-audit --no-fund --loglevel=error
fi
echo "install-clients: kcat $(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\) .*/\1 on librdkafka \2/p');" \
    "$(.venv/bin/python -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.__version__, "on librdkafka", confluent_kafka.libversion()[0] + ";", "kafka-python", kafka.__version__ + ";")')" \
    "$(.venv/bin/python -c 'import pika; print("pika", pika.__version__ + ";")')" \
    "kafkajs $(node -p 'require("./node_modules/kafkajs/package.json").version')"
