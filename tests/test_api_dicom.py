"""DICOM through the real API under waitress, the batch pixel budget, and 413/400 answers that
name their real cause."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from api_helpers import MAX_BATCH_PIXELS, MAX_BYTES, api, assert_json_error, image_bytes, production, registry, serve  # noqa: F401  (fixtures)
from dicom_files import PATIENT_DATA, build_dicom, png_of, shipped, viewer_export

DICOM = {"Content-Type": "application/dicom"}
# The API's own parity bound between two encodings of one picture (params gate.max_parity_diff).
PROBABILITY_TOLERANCE = 1e-4


def radiograph(photometric: str = "MONOCHROME2") -> bytes:
    """A 12-bit radiograph-like DICOM: a rescale, a window, planted patient data."""
    rows = np.linspace(0, 1, 96)[:, None] * np.linspace(0.2, 1, 80)[None, :]
    noise = np.random.default_rng(3).integers(0, 300, (96, 80))
    stored = (rows * 3500 + noise).astype(np.uint16)
    return build_dicom(stored, photometric=photometric, bits_stored=12, RescaleSlope=1.5,
                       RescaleIntercept=-200, WindowCenter=2000, WindowWidth=3000)


def probabilities(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(list(response.json()["probabilities"].values()))


def test_a_dicom_answers_as_the_png_a_viewer_exports_from_it(api):
    for data in (radiograph(), radiograph("MONOCHROME1"), shipped("MR_small.dcm"), shipped("CT_small.dcm")):
        as_dicom = probabilities(api.post(data=data, headers=DICOM))
        as_png = probabilities(api.predict_png(png_of(viewer_export(data))))
        assert np.abs(as_dicom - as_png).max() <= PROBABILITY_TOLERANCE


def test_dicom_is_read_from_multipart_and_in_a_batch_where_a_refused_one_fails_alone(api):
    single = api.post(files={"image": ("x.dcm", radiograph(), "application/dicom")})
    assert single.status_code == 200, single.text
    parts = [("image", (f"{i}.dcm", data, "application/dicom"))
             for i, data in enumerate([radiograph(), shipped("JPEG2000.dcm"), shipped("rtdose.dcm"), image_bytes(90)])]
    entries = api.post("/predict/batch", files=parts).json()
    assert entries[0]["label"] == single.json()["label"]
    assert entries[1]["error"]["code"] == "unsupported_transfer_syntax"
    assert entries[2]["error"]["code"] == "unsupported_dicom"
    assert "label" in entries[3]


def test_refused_dicom_answers_name_the_reason(api):
    compressed = assert_json_error(api.post(data=shipped("JPEG2000.dcm"), headers=DICOM), 415,
                                   "unsupported_transfer_syntax")
    assert "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)" in compressed["error"]["message"]
    assert_json_error(api.post(data=shipped("rtdose.dcm"), headers=DICOM), 400, "unsupported_dicom")
    assert_json_error(api.post(data=shipped("SC_rgb_small_odd.dcm"), headers=DICOM), 400, "unsupported_dicom")
    assert_json_error(api.post(data=shipped("rtplan.dcm"), headers=DICOM), 400, "no_pixel_data")
    assert_json_error(api.post(data=shipped("MR_truncated.dcm"), headers=DICOM), 400, "truncated_image")
    declared = build_dicom(np.zeros((1, 1), np.uint16), Rows=3000, Columns=3000)
    assert_json_error(api.post(data=declared, headers=DICOM), 413, "too_many_pixels")
    assert_json_error(api.post(data=radiograph()[:150], headers=DICOM), 400, "malformed_dicom")


def test_no_patient_data_reaches_a_log_or_an_answer(api, caplog):
    caplog.set_level(logging.DEBUG)
    pixels = np.full((40, 40), 100, np.uint16)
    unreadable_window = build_dicom(pixels, WindowCenter="98765", WindowWidth="4321").replace(b"98765", b"x^y z")
    sent = [radiograph(), unreadable_window,
            build_dicom(pixels, NumberOfFrames=3),
            build_dicom(pixels, photometric="RGB", SamplesPerPixel=3), build_dicom(pixels, WindowCenter=1, WindowWidth=0),
            build_dicom(np.zeros((1, 1), np.uint16), Rows=3000, Columns=3000),
            build_dicom(pixels, pixel_data=b"\x00" * 10), build_dicom(pixels, syntax="1.2.840.10008.1.2.4.50")]
    bodies = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in sent:
            assert b"Planted^Patientname" in data
            bodies.append(api.post(data=data, headers=DICOM).text)
        bodies.append(api.post("/predict/batch", files=[("image", ("a.dcm", d, "application/dicom")) for d in sent[:4]]).text)
    said = "\n".join(bodies + [record.getMessage() for record in caplog.records] + [str(w.message) for w in caught])
    for secret in PATIENT_DATA:
        assert secret not in said
    for code in ("unsupported_transfer_syntax", "too_many_pixels", "malformed_dicom", "unsupported_dicom"):
        assert code in said  # the answers were read, and each refusal was met


def test_a_batch_over_the_pixel_budget_answers_413_naming_it_before_decoding(api):
    side = int((MAX_BATCH_PIXELS / 2) ** 0.5) + 1  # two of these exceed the budget, one does not
    large = build_dicom(np.zeros((1, 1), np.uint16), Rows=side, Columns=side)  # declared only: never decoded
    one = api.post("/predict/batch", files=[("image", ("a.dcm", large, "application/dicom"))]).json()
    assert one[0]["error"]["code"] == "truncated_image"
    body = assert_json_error(api.post("/predict/batch", files=[("image", (f"{i}.dcm", large, "application/dicom"))
                                                              for i in range(2)]), 413, "too_many_batch_pixels")
    assert f"more than the batch budget of {MAX_BATCH_PIXELS} (api.max_batch_pixels)" in body["error"]["message"]


def test_an_image_field_without_a_filename_is_named_as_the_problem(api):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"\r\nContent-Type: image/png\r\n\r\n"
            ).encode() + image_bytes(90) + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    for path in ("/predict", "/predict/batch"):
        answer = assert_json_error(api.post(path, data=body, headers=headers), 400, "image_without_filename")
        assert "has no filename" in answer["error"]["message"]


def test_each_413_names_the_limit_that_was_hit(api):
    boundary = "b0undary"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    field = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n" + "x" * 150_000
             + f"\r\n--{boundary}--\r\n").encode()
    api.app.config["MAX_FORM_MEMORY_SIZE"] = 100_000
    answer = assert_json_error(api.post(data=field, headers=headers), 413, "form_field_too_large")
    assert "larger than 100000 bytes (MAX_FORM_MEMORY_SIZE" in answer["error"]["message"]
    many = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"n{i}\"\r\n\r\nv\r\n" for i in range(1100))
    answer = assert_json_error(api.post(data=(many + f"--{boundary}--\r\n").encode(), headers=headers), 413,
                               "too_many_parts")
    assert "more than 1000 parts (MAX_FORM_PARTS)" in answer["error"]["message"]
    answer = assert_json_error(api.predict_png(b"\x89PNG" + b"\x00" * (MAX_BYTES + 10)), 413, "too_many_bytes")
    assert answer["error"]["message"] == f"the request body is larger than {MAX_BYTES} bytes (api.max_bytes)"
