#!/bin/bash
# ptm-inspect: the right facts for good files; one clear line and a non-zero
# exit for bad ones, within bounded memory.
set -u
inspect=$1
fx=$2
fail=0
# Address space: 2 GiB for the work (a normal load of these files needs
# ~0.2 GB resident) on top of the shared libraries' own mappings, which are
# several GB with a CUDA LibTorch (cuBLAS, cuDNN...) and ~0.5 GB without.
libs_kb=$(ldd "$inspect" | awk '/=> \// {print $3}' | xargs -r stat -Lc %s | awk '{s += $1} END {print int(s * 1.25 / 1024)}')
limit_kb=$((2097152 + libs_kb))
check() {  # check NAME EXPECTED_EXIT PATTERN -- ARGS...
  local name=$1 want=$2 pattern=$3
  shift 4
  local out rc
  out=$( (ulimit -v $limit_kb; "$inspect" "$@") 2>&1 )
  rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $name: exit $rc (want $want), output:"
    echo "$out" | head -20
    fail=1
  else
    echo "ok   $name: $(grep -E -- "$pattern" <<<"$out" | head -1)"
  fi
}
check detect 0 '^architecture: resnet18$' -- "$fx/wrapped_model.pth"
check classes 0 '^classes: +10$' -- "$fx/resnet18_10.pth"
check legacy 0 '^format: +pytorch-legacy$' -- "$fx/legacy.pth"
check safetensors 0 '^format: +safetensors$' -- "$fx/model.safetensors"
check fp16 0 'Half \(' -- "$fx/float16.pth"
check torchscript 0 'TorchScript program' -- "$fx/model.torchscript.pt"
check report 0 '0 missing, 0 unexpected, 0 mis-shaped' -- "$fx/wrapped_model.pth" --arch resnet18
check report-bad 1 'mis-shaped: fc.weight expects \[1000, 2048\], file has \[1000, 512\]' -- "$fx/wrapped_model.pth" --arch resnet50
check new-head 0 'new classification head' -- "$fx/wrapped_model.pth" --arch resnet18 --num-classes 3
check unknown 1 'architecture: unknown; closest: resnet18' -- "$fx/unknown_layout.pth"
check crc-off 0 'CRC checks not possible' -- "$fx/fmt_resnet18_crc_off.pth"
check whole-model 0 'whole pickled model \(torchvision\.models\.resnet\.ResNet\)' -- "$fx/whole_model.pth"
check inert 0 "kept inert, not used: 'args' argparse\.Namespace" -- "$fx/timm_saver.pth"
check lightning 0 "took the [0-9]+ tensors under 'model\.'.*left out 1 other tensor\(s\): 'criterion\.weight'" -- "$fx/lightning.ckpt"
check ema 0 "took the EMA weights 'state_dict_ema'" -- "$fx/timm_saver_ema.pth.tar"
check ema-key 0 "^weights in: +'state_dict'$" -- "$fx/timm_saver_ema.pth.tar" --key state_dict
check unknown-detail 1 '^  resnet18: [0-9]+ of [0-9]+ keys and shapes match .*first missing: layer4\.' -- "$fx/unknown_layout.pth"
for bad in evil_system.pth evil_eval.pth evil_legacy.pth placeholder_in_state_dict.pth huge_entry.pth huge_header.safetensors \
           overflow_shape.safetensors gap.safetensors not_a_model.txt empty.pth fmt_complex64.pth \
           fmt_crc_off_pickle_count.pth fmt_crc_off_cd_size.pth placeholders_100mb.pth training_args.bin; do
  out=$( (ulimit -v $limit_kb; "$inspect" "$fx/$bad") 2>&1 ); rc=$?
  lines=$(printf '%s\n' "$out" | wc -l)
  if [ "$rc" -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -q '^ptm-inspect: ' <<<"$out"; then
    echo "FAIL $bad: exit $rc, $lines lines: $out"; fail=1
  else
    echo "ok   $bad: $out"
  fi
done
"$inspect" /nonexistent.pth >/dev/null 2>&1; [ $? -eq 1 ] || { echo "FAIL missing file"; fail=1; }
# Folders: a hub-style folder is read (model-folder test); one without
# weights, or with several and none of the hub's names, fails saying so.
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
out=$("$inspect" "$dir" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "has no weights" <<<"$out" || { echo "FAIL empty folder: exit $rc: $out"; fail=1; }
cp "$fx/resnet18.pth" "$fx/resnet34.pth" "$dir/"
out=$("$inspect" "$dir" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "several weights files (resnet.*pth, resnet.*pth); name one" <<<"$out" ||
  { echo "FAIL folder with two weights files: exit $rc: $out"; fail=1; }
echo '{"label_names": ["a", 1]}' > "$dir/config.json"; rm "$dir/resnet34.pth"
out=$("$inspect" "$dir" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "config.json label_names must be strings" <<<"$out" ||
  { echo "FAIL folder with a bad config: exit $rc: $out"; fail=1; }
"$inspect" >/dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL usage"; fail=1; }
[ -e "$fx/CANARY" ] && { echo "FAIL: a pickled command ran"; fail=1; }
exit $fail
