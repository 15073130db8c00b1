#!/usr/bin/env bash
# The demo: the whole pipeline on the built-in sample, with no config. Run by `make demo` inside ./demo.
set -euo pipefail
echo "== the resolved default config (hyrax config)" >&2
hyrax config | head -30 >&2
