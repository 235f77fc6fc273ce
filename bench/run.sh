#!/bin/sh
# opensipy load benchmark: see bench/README.md, or bench/run.sh --help.
#   bench/run.sh stateless                         # kamailio vs opensipy search
#   BENCH_ROUNDS=3 bench/run.sh stateless          # three interleaved rounds
#   bench/run.sh --rates 20 --step-seconds 2 --proxies opensipy stateless
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v sipp >/dev/null 2>&1; then
	echo "bench: sipp is not installed (apt-get install -y sip-tester)" >&2
	exit 2
fi
exec python3 "$here/bench.py" "$@"
