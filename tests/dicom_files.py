"""DICOM files for the tests: pydicom's own test files (they ship inside the pydicom wheel, so
nothing is downloaded) and files built here with pydicom, each carrying planted patient data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

# Read straight from the installed package: pydicom.data.get_testdata_file downloads what is missing.
PYDICOM_FILES = Path(pydicom.__file__).resolve().parent / "data" / "test_files"
PATIENT_NAME = "Planted^Patientname"
PATIENT_ID = "PID-7781-SECRET"
PATIENT_BIRTH_DATE = "19390917"
PATIENT_DATA = (PATIENT_NAME, "Planted", "Patientname", PATIENT_ID, PATIENT_BIRTH_DATE)


def shipped(name: str) -> bytes:
    """One of pydicom's test files."""
    return (PYDICOM_FILES / name).read_bytes()


def build_dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                signed: bool | None = None, syntax=ExplicitVRLittleEndian, pixel_data: bytes | None = None,
                **attributes) -> bytes:
    """A DICOM Part 10 file of one frame of ``pixels`` (uint8/uint16/int16), with patient data."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.PatientBirthDate = PATIENT_BIRTH_DATE
    dataset.StudyDate = PATIENT_BIRTH_DATE
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = bits_stored or dataset.BitsAllocated
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = int(pixels.dtype.kind == "i" if signed is None else signed)
    for name, value in attributes.items():
        setattr(dataset, name, value)
    raw = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes() if pixel_data is None else pixel_data
    # A compressed syntax needs encapsulated fragments; these are not real JPEG: nothing may decode them.
    dataset.PixelData = encapsulate([raw]) if UID(syntax).is_compressed else raw
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def viewer_export(data: bytes) -> np.ndarray:
    """The 8-bit image a viewer exports from a DICOM, computed with pydicom's own LUT functions on
    the whole image: Modality LUT, then the VOI LUT or window (else the stored range), MONOCHROME1
    inverted. An independent reading of the standard, to compare the API's with."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    modality = apply_modality_lut(dataset.pixel_array, dataset)
    values = modality.astype(np.float64)
    if "VOILUTSequence" in dataset:
        top = 2 ** dataset.VOILUTSequence[0].LUTDescriptor[2] - 1
        display, low, high = apply_voi_lut(modality, dataset).astype(np.float64), 0.0, float(top)
    else:
        stored = 2 ** dataset.BitsStored
        low_stored = -stored // 2 if dataset.PixelRepresentation else 0
        ends = apply_modality_lut(np.array([low_stored, low_stored + stored - 1]), dataset)
        low, high = float(min(ends)), float(max(ends))
        display = apply_voi_lut(values, dataset).astype(np.float64) if "WindowWidth" in dataset else values
    unit = np.clip((display - low) / (high - low), 0, 1)
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        unit = 1 - unit
    return np.floor(unit * 255 + 0.5).astype(np.uint8)


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
