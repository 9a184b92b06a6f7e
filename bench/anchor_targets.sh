# Targets file for ../shared/bench/run_anchor.sh: adds this gateway ("ours") to the side-by-side run.
#
#   ROOT=$PWD TARGETS_FILE=$PWD/bench/anchor_targets.sh ONLY=ours OUT=/tmp/ours.md RAW_DIR=/tmp/bench-raw \
#       bash ../shared/bench/run_anchor.sh
#
# Our gateway: one process (hypercorn trio worker), pinned to CPU 0 like the upstream (as litellm-w1),
# SQLite ledger with synchronous=FULL in the run's scratch dir, every request/delta/charge durable
# before its bytes are sent; the bench model is an openai-chat provider pointing at the fast upstream.
OURS_ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
OURS_KEY="sk-plat_anchor-bench-0123456789abcdefghij"
prepare2() {
  cat > "$WORK/ours.toml" <<TOML
[[providers]]
name = "fast"
kind = "openai-chat"
base_url = "$UPSTREAM"

[[models]]
id = "bench-model"
provider = "fast"
TOML
}
target ours 0 'http://127.0.0.1:$PORT' "$OURS_KEY" 'bench-model' "cd $OURS_ROOT && ASSISTIV_BOOTSTRAP_PLATFORM_KEY=$OURS_KEY exec ${OURS_PYTHON:-$OURS_ROOT/.venv/bin/python} -m gateway serve --port \$PORT --data-dir \$WORK/ours-data --config \$WORK/ours.toml"
