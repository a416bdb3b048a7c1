#!/bin/bash
# File -> classify -> annotated file, plus JSON lines of every frame's results.
#   pipelines/annotate-file.sh MODEL INPUT_VIDEO OUTPUT.avi [RESULTS.jsonl]
# Run inside `meson devenv -C build` (or with GST_PLUGIN_PATH set).
set -euo pipefail
model=$1 input=$2 output=$3 results=${4:-${3%.*}.jsonl}
gst-launch-1.0 -q filesrc location="$input" ! decodebin ! videoconvert \
  ! ptmpreprocess ! ptminfer model="$model" results-file="$results" \
  ! ptmoverlay show-timing=true ! videoconvert ! jpegenc ! avimux ! filesink location="$output"
