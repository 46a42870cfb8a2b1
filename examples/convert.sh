#!/usr/bin/env bash
# Convert a transparent clip between formats and inspect the results, keeping alpha throughout.
# Usage: examples/convert.sh [WORKDIR]   (default: a fresh temporary directory)
# Needs layeranim and its Python on PATH (or set LAYERANIM / PYTHON); makes its own tiny input.
set -euo pipefail

LAYERANIM=${LAYERANIM:-layeranim}
PYTHON=${PYTHON:-python}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
cd "$WORK"

# 1. A tiny RGBA source: an orange disc with a soft edge moving over transparency, as a PNG sequence.
$PYTHON - <<'PY'
import numpy as np
from layeranim import video_io

yy, xx = np.mgrid[0:64, 0:96]
frames = np.zeros((8, 64, 96, 4), np.uint8)
for f in range(8):
    coverage = np.clip((16.0 - np.hypot(xx - (24 + 6 * f), yy - 32)) / 6.0, 0.0, 1.0)
    frames[f, ..., :3] = (255, 128, 0)
    frames[f, ..., 3] = np.rint(coverage * 255).astype(np.uint8)
video_io.write_video("source", frames, 24, overwrite=True)
PY

# 2. Inspect it, then convert to the web format (VP9 with alpha) and to ProRes 4444 for editors.
$LAYERANIM info source
$LAYERANIM convert source clip.webm --overwrite
$LAYERANIM convert clip.webm clip.mov --overwrite --json

# 3. Animated images, a frame range, a resize and a flattened copy with a quick-look preview.
$LAYERANIM convert clip.mov clip.webp --overwrite                    # lossless animated WebP
$LAYERANIM convert clip.mov half.apng --resize 48x0 --step 2 --overwrite
$LAYERANIM convert clip.webm flat.webm --background white --preview --overwrite

# 4. Probe the results; alpha must be stored in every one of them.
for file in clip.webm clip.mov clip.webp half.apng; do
    $LAYERANIM info "$file" --json
done

# 5. Formats that would drop alpha are refused with one clear line (exit code 2).
if $LAYERANIM convert clip.webm clip.mp4 2>err.txt; then
    echo "expected .mp4 to be refused" >&2
    exit 1
fi
cat err.txt
echo "examples written to $WORK"
