#!/bin/bash
# Live camera annotation: every frame classified and labelled on screen.
#   pipelines/camera.sh MODEL [/dev/video0]
# ptminfer's interval=N keeps up on slow machines (results reused in between);
# smoothing/hysteresis steady the label on a live view.
set -euo pipefail
model=$1 device=${2:-/dev/video0}
gst-launch-1.0 v4l2src device="$device" ! videoconvert \
  ! ptminfer model="$model" interval=2 smoothing=0.6 hysteresis=3 \
  ! ptmoverlay show-timing=true ! videoconvert ! autovideosink sync=false
