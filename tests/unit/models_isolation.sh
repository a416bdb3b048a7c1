#!/bin/bash
# models/ must stay GStreamer- and GLib-free: no such include anywhere in it.
set -eu
dir=$1
if grep -rnE '#\s*include\s*[<"](gst/|glib|gio/|gobject/)' "$dir"; then
  echo "FAIL: models/ includes a GStreamer or GLib header" >&2
  exit 1
fi
if grep -nE 'gst|glib' "$dir/meson.build" | grep -v '^[0-9]*:#'; then
  echo "FAIL: models/meson.build names a GStreamer or GLib dependency" >&2
  exit 1
fi
echo "models/ is free of GStreamer and GLib"
