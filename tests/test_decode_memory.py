"""Peak memory of decoding one large image, measured as the resident-set high-water mark of a
fresh process (Pillow's pixel buffers are invisible to tracemalloc): at most ~3x the decoded
image's own bytes, whatever the format and bit depth."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from dicom_files import build_dicom
from helpers import REPO_ROOT, clean_env
from PIL import Image

SIDE = 4000  # 16 M pixels: 32 MB as 16-bit samples, large enough that a full-size float copy shows
MEASURE = r"""
import json, sys
import numpy as np
from core.preprocess import image_bytes_to_array

def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field))

data = open(sys.argv[1], "rb").read()
warm = open(sys.argv[2], "rb").read()
image_bytes_to_array(warm, 128, max_pixels=10**8)  # libraries and decoders loaded before measuring
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # resets the high-water mark (VmHWM) to the current resident set
base = status("VmRSS:")
image = image_bytes_to_array(data, 128, max_pixels=10**8)
print(json.dumps({"peak_bytes": status("VmHWM:") - base, "shape": list(image.shape)}))
"""


def picture(dtype) -> np.ndarray:
    """A smooth radiograph-like ramp with mild noise: compresses well, so the file stays small."""
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top * 0.9, SIDE, dtype=np.float64)
    noise = np.random.default_rng(0).integers(0, 16, SIDE)
    return (ramp[:, None] * 0.5 + ramp[None, :] * 0.5 + noise[None, :]).astype(dtype)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def peak_decode_bytes(tmp_path, data: bytes, warm: bytes) -> int:
    (tmp_path / "image").write_bytes(data)
    (tmp_path / "warm").write_bytes(warm)
    # A fixed mmap threshold: every large buffer is its own mapping, so none hides in memory
    # an earlier allocation left behind, and the high-water mark sees each one.
    result = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "image"), str(tmp_path / "warm")],
                            cwd=REPO_ROOT, env=clean_env(MALLOC_MMAP_THRESHOLD_="131072"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["shape"] == [128, 128, 1]
    return answer["peak_bytes"]


@pytest.mark.parametrize("kind", ["png16", "png8", "dicom16"])
def test_decoding_a_large_image_peaks_under_three_times_its_decoded_bytes(tmp_path, kind):
    if kind == "dicom16":
        pixels = picture(np.uint16)
        data, warm = build_dicom(pixels, bits_stored=12, WindowCenter=30000, WindowWidth=40000), \
            build_dicom(pixels[:64, :64], bits_stored=12)
    else:
        pixels = picture(np.uint16 if kind == "png16" else np.uint8)
        data, warm = png(pixels), png(pixels[:64, :64])
    decoded = pixels.nbytes
    peak = peak_decode_bytes(tmp_path, data, warm)
    print(f"{kind}: decoded {decoded / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB ({peak / decoded:.2f}x)")
    assert peak <= 3 * decoded, f"peak {peak / 1e6:.0f} MB for {decoded / 1e6:.0f} MB of decoded pixels"
