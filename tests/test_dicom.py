"""DICOM through the one decoding rule: real files from pydicom's wheel and files built here."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_files import PATIENT_DATA, build_dicom, png_of, shipped, viewer_export
from helpers import config_variables
from pydicom.dataset import Dataset

from core.config import load_params
from core.preprocess import (
    ImageError,
    MalformedDicom,
    NoPixelData,
    TooManyPixels,
    TruncatedImage,
    UnsupportedDicom,
    UnsupportedTransferSyntax,
    WrongDimensions,
    image_bytes_to_array,
    image_dimensions,
    open_image,
)
from model.dataset import scan_dataset
from model.tfdata import make_tf_dataset
from model.validation import validate_dataset


def gray(data: bytes, **limits) -> np.ndarray:
    """The decoded pixels; these tests build narrow images (4 columns), under api.min_side."""
    return np.asarray(open_image(data, **{"min_side": 1, **limits}))


def ramp(low: int, high: int, dtype=np.uint16, shape=(48, 64)) -> np.ndarray:
    return np.linspace(low, high, shape[0] * shape[1]).round().astype(dtype).reshape(shape)


def assert_close_to_viewer(data: bytes) -> None:
    ours, viewer = gray(data).astype(int), viewer_export(data).astype(int)
    assert ours.shape == viewer.shape
    assert np.abs(ours - viewer).max() <= 1, "more than one gray level from the viewer's export"
    assert np.mean(ours != viewer) < 0.01


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "examples_overlay.dcm"])
def test_real_dicom_files_read_as_a_viewer_exports_them(name):
    assert_close_to_viewer(shipped(name))


def test_every_uncompressed_syntax_reads_the_same_pixels():
    reference = gray(shipped("MR_small.dcm"))
    assert reference.std() > 10
    for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm"):
        np.testing.assert_array_equal(gray(shipped(name)), reference)


def test_monochrome1_is_inverted_so_air_is_dark():
    pixels = ramp(0, 4095)
    normal = gray(build_dicom(pixels, bits_stored=12))
    inverted = gray(build_dicom(pixels, photometric="MONOCHROME1", bits_stored=12))
    np.testing.assert_array_equal(inverted, 255 - normal)
    assert inverted[0, 0] == 255 and inverted[-1, -1] == 0
    assert_close_to_viewer(build_dicom(pixels, photometric="MONOCHROME1", bits_stored=12))


def test_without_a_window_the_full_stored_range_is_shown():
    pixels = np.array([[0, 2048, 4095, 1000]] * 40, dtype=np.uint16)
    shown = gray(build_dicom(pixels, bits_stored=12))[0]
    assert shown.tolist() == [0, 128, 255, round(1000 / 4095 * 255)]


def test_bits_above_bits_stored_are_ignored_and_signed_values_sign_extended():
    pixels = np.array([[5, 4095, 2048, 0]] * 40, dtype=np.uint16)
    garbage = pixels | 0xF000  # an overlay or noise in the unused high bits
    np.testing.assert_array_equal(gray(build_dicom(garbage, bits_stored=12)), gray(build_dicom(pixels, bits_stored=12)))
    signed = np.array([[-2048, -1, 0, 2047]] * 40, dtype=np.int16)
    raw = (signed.view(np.uint16) & 0x0FFF) | 0xA000  # 12-bit two's complement under garbage bits
    shown = gray(build_dicom(signed, bits_stored=12, pixel_data=raw.astype("<u2").tobytes()))[0]
    assert shown.tolist() == [0, 127, 128, 255]
    assert_close_to_viewer(build_dicom(signed, bits_stored=12))


def test_the_rescale_is_applied_before_the_window():
    stored = ramp(0, 2000)
    window = {"WindowCenter": 100, "WindowWidth": 801}
    rescaled = build_dicom(stored, RescaleSlope=2, RescaleIntercept=-1000, RescaleType="US", **window)
    by_hand = build_dicom((stored.astype(np.int32) * 2 - 1000).astype(np.int16), signed=True, **window)
    np.testing.assert_array_equal(gray(rescaled), gray(by_hand))
    assert_close_to_viewer(rescaled)
    values = gray(build_dicom(np.array([[299, 300, 600, 900, 1000] * 8] * 40, np.uint16),
                              WindowCenter=600, WindowWidth=601))[0, :5]
    assert values.tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_each_voi_lut_function_matches_the_standard(function):
    data = build_dicom(ramp(0, 4095), bits_stored=12, WindowCenter=[1500, 3000], WindowWidth=[1000, 500],
                       VOILUTFunction=function)
    assert_close_to_viewer(data)


def test_a_voi_lut_sequence_wins_over_a_window():
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = np.arange(255, -1, -1, dtype="<u2").tobytes()  # an inverting 8-bit LUT
    lut = build_dicom(ramp(0, 255, np.uint8), bits_stored=8, VOILUTSequence=[item], WindowCenter=10, WindowWidth=5)
    shown = gray(lut)
    assert shown[0, 0] == 255 and shown[-1, -1] == 0
    assert_close_to_viewer(lut)


REFUSED = [
    ("JPEG2000.dcm", UnsupportedTransferSyntax, 415, r"JPEG 2000 Image Compression \(1\.2\.840\.10008\.1\.2\.4\.91\)"),
    ("MR_small_RLE.dcm", UnsupportedTransferSyntax, 415, r"RLE Lossless \(1\.2\.840\.10008\.1\.2\.5\)"),
    ("image_dfl.dcm", UnsupportedTransferSyntax, 415, "Deflated Explicit VR Little Endian"),
    ("rtdose.dcm", UnsupportedDicom, 400, "multi-frame DICOM \\(15 frames\\)"),
    ("SC_rgb_small_odd.dcm", UnsupportedDicom, 400, "colour DICOM images are not accepted \\(3 samples per pixel, RGB\\)"),
    ("examples_palette.dcm", UnsupportedDicom, 400, "PALETTE COLOR"),
    ("MR_truncated.dcm", TruncatedImage, 400, "truncated: 8130 of the 8192 bytes"),
    ("rtplan.dcm", NoPixelData, 400, "no pixel data"),
]


@pytest.mark.parametrize(("name", "error", "status", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_real_files_that_cannot_be_read_are_refused_by_their_reason(name, error, status, message):
    with pytest.raises(error, match=message) as caught:
        open_image(shipped(name))
    assert caught.value.status == status


def built_refusals() -> dict[str, tuple[bytes, type]]:
    pixels = ramp(0, 4095)
    header_only = build_dicom(np.zeros((1, 1), np.uint16), Rows=30_000, Columns=30_000)
    good = build_dicom(pixels)
    return {
        "multi-frame": (build_dicom(pixels, NumberOfFrames=2), UnsupportedDicom),
        "colour": (build_dicom(pixels, photometric="RGB", SamplesPerPixel=3), UnsupportedDicom),
        "no pixel data": (good[:good.rindex(b"\xe0\x7f\x10\x00")], NoPixelData),
        "JPEG baseline syntax": (build_dicom(pixels, syntax="1.2.840.10008.1.2.4.50"),
                                                    UnsupportedTransferSyntax),
        "declared over the budget": (header_only, TooManyPixels),
        "file meta cut short": (good[:150], MalformedDicom),
        "cut inside the pixel data header": (good[:good.rindex(b"\xe0\x7f\x10\x00") + 10], MalformedDicom),
        "garbage after the magic": (good[:132] + bytes(range(256)) * 4, MalformedDicom),
        "window width zero": (build_dicom(pixels, WindowCenter=10, WindowWidth=0), UnsupportedDicom),
        "1-bit pixels": (build_dicom(pixels, BitsAllocated=1), UnsupportedDicom),
    }


@pytest.mark.parametrize("case", list(built_refusals()))
def test_built_files_that_cannot_be_read_are_refused_without_patient_data(case):
    data, error = built_refusals()[case]
    with pytest.raises(error) as caught:
        open_image(data)
    text = f"{caught.value} {caught.value.__cause__ or ''} {caught.value.__context__ if not caught.value.__suppress_context__ else ''}"
    assert not any(secret in text for secret in PATIENT_DATA), text


def test_the_pixel_budget_is_checked_from_the_header_before_the_pixels():
    # 30000 x 30000 declared, one pixel carried: reading pixels first would answer "truncated".
    data = built_refusals()["declared over the budget"][0]
    with pytest.raises(TooManyPixels, match=r"30000x30000 = 900000000 pixels, more than 25000000 \(api.max_pixels\)"):
        open_image(data)
    assert image_dimensions(data) == (30_000, 30_000)
    with pytest.raises(WrongDimensions):
        open_image(build_dicom(ramp(0, 10, shape=(8, 64))), min_side=16)


def test_a_compressed_syntax_is_named_in_the_refusal():
    data = build_dicom(ramp(0, 4095), syntax="1.2.840.10008.1.2.4.50")
    with pytest.raises(UnsupportedTransferSyntax, match=r"JPEG Baseline \(Process 1\) \(1\.2\.840\.10008\.1\.2\.4\.50\)"):
        open_image(data)


def test_every_refusal_is_an_image_error():
    for data, _ in built_refusals().values():
        with pytest.raises(ImageError):
            open_image(data)


def test_a_dicom_in_a_class_folder_is_validated_and_trained_on_as_its_png_export(tmp_path, monkeypatch):
    for name in config_variables():
        monkeypatch.delenv(name, raising=False)
    params = load_params(environ={})
    params["data"]["min_images_per_class"] = 0
    classes = params["classes"]
    data = build_dicom(ramp(0, 4095, shape=(64, 64)), photometric="MONOCHROME1", bits_stored=12,
                       WindowCenter=2000, WindowWidth=3000)
    (tmp_path / classes[0] / "images").mkdir(parents=True)
    (tmp_path / classes[0] / "images" / "scan.dcm").write_bytes(data)
    (tmp_path / classes[1]).mkdir()
    (tmp_path / classes[1] / "export.png").write_bytes(png_of(viewer_export(data)))
    (tmp_path / classes[1] / "broken.dcm").write_bytes(shipped("JPEG2000.dcm"))
    dataset = scan_dataset(str(tmp_path), classes, params["data"]["split"], progress=False)
    report, _ = validate_dataset(dataset, params, progress=False)
    dicom_path, png_path = f"{classes[0]}/images/scan.dcm", f"{classes[1]}/export.png"
    assert [c["path"] for c in report["corrupt"]] == [f"{classes[1]}/broken.dcm"]
    assert "JPEG 2000" in report["corrupt"][0]["error"]
    # Validation sees one picture under two classes: the DICOM and the viewer's export of it.
    conflicts = [sorted(member["path"] for member in group) for group in report["groups"]["conflict_groups"]]
    assert conflicts == [sorted([dicom_path, png_path])]
    examples = [e for path in (dicom_path, png_path) for e in dataset.examples if e.path == path]
    batch, _ = next(iter(make_tf_dataset(dataset, examples, 32, 2)))
    np.testing.assert_array_equal(batch[0].numpy(), image_bytes_to_array(data, 32))
    np.testing.assert_array_equal(batch[0].numpy(), batch[1].numpy())


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")  # pydicom reads the damage leniently
def test_damaged_dicom_files_are_refused_as_image_errors_never_crash_the_reader():
    """Cut or overwritten bytes anywhere in a file (header, attributes, pixels) end as an
    ImageError or as a readable image: never another exception, which the API would answer 500."""
    good = build_dicom(ramp(0, 4095), bits_stored=12, RescaleSlope=2, RescaleIntercept=-10,
                       WindowCenter=[1500, 3000], WindowWidth=[1000, 500], VOILUTFunction="SIGMOID")
    rng = np.random.default_rng(19)
    refused = 0
    for _ in range(300):
        damaged = bytearray(good[:int(rng.integers(132, len(good)))] if rng.random() < 0.3 else good)
        for position in rng.integers(128, len(damaged), int(rng.integers(1, 6))):
            damaged[position] = int(rng.integers(0, 256))
        try:
            open_image(bytes(damaged))
        except ImageError:
            refused += 1
    assert refused > 30  # the damage reached the parser often enough to mean something


def test_a_rescale_or_window_that_is_not_a_finite_number_is_malformed():
    pixels = ramp(0, 4095)
    for attributes in ({"RescaleSlope": "NaN", "RescaleIntercept": "0"}, {"WindowCenter": "inf", "WindowWidth": "10"}):
        with pytest.raises(MalformedDicom, match="is not a finite number"):
            open_image(build_dicom(pixels, **attributes))
