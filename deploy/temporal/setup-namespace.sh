#!/bin/sh
# One-shot (admin-tools image), once the server is healthy: the CarePath namespace and the
# search attributes journeys carry (SEARCH_ATTRIBUTES: "Name=Type ..."; docker-compose.yml
# lists CarePath's, and tests/test_compose.py checks them against the code).
set -eu
: "${TEMPORAL_ADDRESS:?}" "${NAMESPACE:?}" "${SEARCH_ATTRIBUTES:?}"

retry() {  # a new namespace takes a few seconds to reach every frontend
    n=0
    until "$@"; do
        n=$((n + 1))
        if [ "$n" -ge 30 ]; then
            echo "gave up: $*"
            return 1
        fi
        sleep 2
    done
}

retry temporal operator cluster health --address "$TEMPORAL_ADDRESS"
if ! temporal operator namespace describe --namespace "$NAMESPACE" \
    --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then
    temporal operator namespace create --namespace "$NAMESPACE" \
        --retention "${NAMESPACE_RETENTION:-30d}" --address "$TEMPORAL_ADDRESS"
fi
for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    if temporal operator search-attribute list --namespace "$NAMESPACE" \
        --address "$TEMPORAL_ADDRESS" 2>/dev/null | grep -qw "$name"; then
        echo "search attribute $name: already registered"
    else
        retry temporal operator search-attribute create --namespace "$NAMESPACE" \
            --name "$name" --type "$type" --address "$TEMPORAL_ADDRESS"
    fi
done
echo "namespace $NAMESPACE ready"
