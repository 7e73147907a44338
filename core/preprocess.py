"""Image decoding shared by training and serving, so both see exactly the same pixels.

The network takes a batch of shape ``(N, S, S, 1)``, float32 in [0, 1], where ``S`` is
``data.image_size``: one gray channel, resized with Pillow's bilinear filter. Training reads files
through this module and the API reads request bodies through it; keeping one implementation is
what makes the accuracy measured through the API match the accuracy measured in training.

Rules every path follows (API, data validation, training):

- Only PNG, JPEG and uncompressed DICOM (Part 10, ``DICM`` after the 128-byte preamble) are
  decoded. Another image format is refused (:class:`UnsupportedFormat`) before any other decoder
  sees the bytes: Pillow's TIFF, PSD or EPS readers (EPS runs Ghostscript) are never run on a
  client's data.
- The pixel budget (``api.max_pixels``, :data:`DEFAULT_MAX_PIXELS` where a caller gives none) and
  the smallest side (``api.min_side``, :data:`DEFAULT_MIN_SIDE`) are checked from the header,
  before decoding: every reader passes params.yaml's values, so an image the API answers 400 or
  413 is never trained on, validated as usable, or evaluated either. Pillow's own
  decompression-bomb guard stays on as a
  second line: an image over twice ``PIL.Image.MAX_IMAGE_PIXELS`` is refused whatever the budget.
- 16-bit gray PNGs: white is ``2**b - 1``, where ``b`` is the significant bits of the PNG's
  ``sBIT`` chunk when it has one, else 16 (the type's range). A 12-bit radiograph written with
  ``sBIT`` 12 and samples up to 4095 therefore arrives at its real brightness. A sample above
  ``2**b - 1`` shows the encoder scaled the samples to the full 16 bits, as the PNG specification
  describes for ``sBIT``; such an image is read by the type's range, so it is never clipped.
  Without ``sBIT`` a 12-bit image stored unscaled reads dark: the file does not say its range.
- DICOM (:func:`open_dicom`): the stored values go through the Modality LUT (rescale slope and
  intercept, or the Modality LUT Sequence), then the first VOI LUT (the VOI LUT Sequence, else the
  first window centre/width with its VOI LUT Function), else the full stored range (``BitsStored``
  through the rescale); MONOCHROME1 is inverted so air is dark. The result is an 8-bit gray image
  (``round(v * 255)`` of the VOI output ``v`` in [0, 1]), what a viewer exports as PNG; from there
  it takes the gray conversion and resize of every other image. Refused: compressed transfer
  syntaxes (415, naming the syntax: no decoder runs here), multi-frame, colour, no pixel data, a
  declared size over the budget (read from the header, before the pixels), malformed files.
  Nothing of the header but the image's own attributes is read, and no message quotes a value of
  the file's, so patient data never reaches a log or an answer.
- Memory: pixels are converted in bands of :data:`BAND_PIXELS`, so a request holds the decoded
  image, its 8-bit result and one band of arithmetic, never a full-size float copy. The result is
  bit-identical to converting the whole image at once (the arithmetic is per pixel; 16-bit PNGs
  go through a table of the same float32 arithmetic on each of the 65536 sample values).
"""

from __future__ import annotations

import io
import math
import re
import struct

import numpy as np
import pydicom
import pydicom.config
from PIL import Image
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

# pydicom warns about invalid values quoting them (a patient's name, say): never read them aloud.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

ACCEPTED_FORMATS = ("PNG", "JPEG")
# The budget of callers that pass none (training's reader); the same number as api.max_pixels in
# params.yaml, which a test keeps in step.
DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MIN_SIDE = 32  # api.min_side, kept in step the same way
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
SIGNIFICANT_BITS = "significant_bits"  # image.info key: the sBIT of a 16-bit gray PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMAT_PREFIX_BYTES = 16  # what Pillow's format detectors look at
DICOM_PREAMBLE_BYTES = 128
DICOM_MAGIC = b"DICM"
DICOM_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)  # uncompressed
DICOM_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
DICOM_BITS_ALLOCATED = (8, 16, 32)
PIXEL_DATA_TAG = 0x7FE00010
EXPLICIT_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
# Rows of float arithmetic at a time: a band of 2**18 pixels costs 2 MB in float64.
BAND_PIXELS = 1 << 18
# Errors pydicom or struct raise on a malformed header (it has no single base class for them).
DICOM_PARSE_ERRORS = (InvalidDicomError, BytesLengthException, EOFError, OSError, ValueError, KeyError,
                      IndexError, TypeError, AttributeError, NotImplementedError, OverflowError,
                      RecursionError, struct.error)


class ImageError(ValueError):
    """An image cannot be used. ``code`` is the API's error code, ``status`` its HTTP status."""

    code = "invalid_image"
    status = 400


class NotAnImage(ImageError):
    code = "not_an_image"


class UnsupportedFormat(ImageError):
    code = "unsupported_image_format"
    status = 415


class TruncatedImage(ImageError):
    code = "truncated_image"


class WrongDimensions(ImageError):
    code = "wrong_dimensions"


class TooManyPixels(ImageError):
    code = "too_many_pixels"
    status = 413


class UnsupportedTransferSyntax(UnsupportedFormat):
    code = "unsupported_transfer_syntax"


class UnsupportedDicom(ImageError):
    """A well-formed DICOM whose image this model cannot take: multi-frame, colour, odd sample sizes."""

    code = "unsupported_dicom"


class NoPixelData(ImageError):
    code = "no_pixel_data"


class MalformedDicom(NotAnImage):
    code = "malformed_dicom"


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part 10 file (``DICM`` after the preamble)."""
    return data[DICOM_PREAMBLE_BYTES:DICOM_PREAMBLE_BYTES + len(DICOM_MAGIC)] == DICOM_MAGIC


def other_image_format(data: bytes) -> str | None:
    """The name of the image format ``data`` starts like, among those Pillow knows by signature.

    Only Pillow's signature checks run (a look at the first bytes); no decoder does. Formats
    without a signature (TGA, for one) cannot be told from random bytes and are not named.
    """
    Image.init()
    prefix = data[:FORMAT_PREFIX_BYTES]
    for name, (_, accept) in Image.OPEN.items():
        if name not in ACCEPTED_FORMATS and accept is not None and accept(prefix):
            return name
    return None


def png_significant_bits(data: bytes) -> int | None:
    """The gray significant bits of a PNG's ``sBIT`` chunk (which precedes the pixel data), if any."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        if kind == b"sBIT":
            bits = data[position + 8] if length >= 1 and position + 8 < len(data) else 0
            return bits if 1 <= bits <= 16 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        position += 12 + length  # length, type, data, CRC
    return None


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Pillow's lazy image of a PNG or JPEG: the header is read, no pixel is decoded."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(
            f"the image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, over the budget "
            f"of {max_pixels} (api.max_pixels)"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        other = other_image_format(data)
        if other:
            raise UnsupportedFormat(f"{other} images are not accepted; send a PNG, JPEG or DICOM") from exc
        raise NotAnImage("not an image: the data is neither PNG, JPEG nor DICOM (a DICOM file starts "
                         "with a 128-byte preamble and DICM)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"not an image: the PNG or JPEG header is broken ({exc})") from exc


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise TooManyPixels(
            f"the image has {width}x{height} = {width * height} pixels, more than {max_pixels} "
            "(api.max_pixels)"
        )
    if min(width, height) < min_side:
        raise WrongDimensions(
            f"the image is {width}x{height}; each side must be at least {min_side} pixels"
        )


def image_dimensions(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the header alone, decoding no pixel; raises an :class:`ImageError`
    when the header cannot be read."""
    if not data:
        raise NotAnImage("the body is empty: send the image bytes")
    if is_dicom(data):
        rows, columns = _dicom_geometry(_dicom_header(data)).shape
        return columns, rows
    return _open_header(data, DEFAULT_MAX_PIXELS).size


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> Image.Image:
    """Decode ``data`` fully into a Pillow image, raising an :class:`ImageError` if it is unusable."""
    if not data:
        raise NotAnImage("the body is empty: send the image bytes")
    if is_dicom(data):
        return open_dicom(data, max_pixels=max_pixels, min_side=min_side)
    image = _open_header(data, max_pixels)
    _check_size(*image.size, max_pixels, min_side)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImage(f"the image data is truncated or corrupt ({exc})") from exc
    if image.mode in SIXTEEN_BIT_MODES and image.format == "PNG":
        image.info[SIGNIFICANT_BITS] = png_significant_bits(data)
    return image


class DicomHeader:
    """A DICOM's header up to its pixel data, and where the pixel data element starts."""

    def __init__(self, dataset: pydicom.Dataset, syntax: UID, pixel_offset: int, size: int):
        self.dataset, self.syntax, self.pixel_offset = dataset, syntax, pixel_offset
        self.has_pixel_data = pixel_offset + 8 <= size  # the header parse stopped at a pixel data tag


def _dicom_header(data: bytes) -> DicomHeader:
    stream = io.BytesIO(data)
    try:
        dataset = pydicom.dcmread(stream, stop_before_pixels=True)
    except (EOFError, struct.error):
        raise MalformedDicom("malformed DICOM: the file ends inside its header") from None
    except DICOM_PARSE_ERRORS as exc:
        # The exception's text may quote the file: only its kind is told.
        raise MalformedDicom(f"malformed DICOM: the header cannot be read ({type(exc).__name__})") from None
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax:
        raise MalformedDicom("malformed DICOM: its file meta information names no transfer syntax")
    syntax = UID(str(syntax))
    return DicomHeader(dataset, syntax, stream.tell(), len(data))


def _syntax_name(syntax: UID) -> str:
    if not re.fullmatch(r"[0-9.]{1,64}", str(syntax)):
        return "an unrecognised transfer syntax"
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)


class DicomGeometry:
    """The image attributes of a DICOM header that decide how its pixels are read."""

    def __init__(self, header: DicomHeader):
        dataset = header.dataset
        self.header = header
        try:
            self.frames = int(dataset.get("NumberOfFrames") or 1)
            self.samples = int(dataset.get("SamplesPerPixel") or 1)
            self.photometric = str(dataset.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
            self.shape = (int(dataset.Rows), int(dataset.Columns))
            self.bits_allocated = int(dataset.BitsAllocated)
            self.bits_stored = int(dataset.get("BitsStored") or self.bits_allocated)
            self.signed = int(dataset.get("PixelRepresentation") or 0) == 1
        except DICOM_PARSE_ERRORS:
            raise MalformedDicom("malformed DICOM: Rows, Columns or BitsAllocated is missing or not a "
                                 "number") from None

    @property
    def dtype(self) -> np.dtype:
        """The stored samples' type (once ``bits_allocated`` is known to be 8, 16 or 32)."""
        big = self.header.syntax == ExplicitVRBigEndian
        return np.dtype(f"{'>' if big else '<'}{'i' if self.signed else 'u'}{self.bits_allocated // 8}")


PHOTOMETRIC_NAMES = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
                     "PALETTE COLOR", "HSV", "ARGB", "CMYK")


def _dicom_geometry(header: DicomHeader) -> DicomGeometry:
    """The header's image attributes once the transfer syntax and the kind of image are accepted."""
    if header.syntax not in DICOM_SYNTAXES:
        raise UnsupportedTransferSyntax(
            f"DICOM transfer syntax {_syntax_name(header.syntax)} is not accepted: this server has no "
            "decoder for compressed pixel data; send uncompressed DICOM (Explicit or Implicit VR "
            "Little Endian)"
        )
    if not header.has_pixel_data:
        raise NoPixelData("the DICOM has no pixel data (7FE0,0010): it is not an image")
    geometry = DicomGeometry(header)
    if geometry.frames > 1:
        raise UnsupportedDicom(f"a multi-frame DICOM ({geometry.frames} frames) is not accepted; "
                               "send one frame per image")
    if geometry.samples != 1 or geometry.photometric not in DICOM_MONOCHROME:
        named = geometry.photometric if geometry.photometric in PHOTOMETRIC_NAMES else "not monochrome"
        raise UnsupportedDicom(f"colour DICOM images are not accepted ({geometry.samples} samples per "
                               f"pixel, {named}); send MONOCHROME1 or MONOCHROME2")
    if geometry.bits_allocated not in DICOM_BITS_ALLOCATED or not 1 <= geometry.bits_stored <= geometry.bits_allocated:
        raise UnsupportedDicom(f"DICOM pixels of {geometry.bits_allocated} bits allocated, "
                               f"{geometry.bits_stored} stored are not accepted; send 8, 16 or 32 bits")
    return geometry


def _pixel_data(data: bytes, geometry: DicomGeometry) -> np.ndarray:
    """The stored values as a view of ``data`` (no copy), checked against the declared size."""
    header = geometry.header
    offset, endian = header.pixel_offset, ">" if header.syntax == ExplicitVRBigEndian else "<"
    if offset + 8 > len(data):
        raise NoPixelData("the DICOM has no pixel data (7FE0,0010): it is not an image")
    group, element = struct.unpack_from(f"{endian}HH", data, offset)
    if (group << 16 | element) != PIXEL_DATA_TAG:
        raise UnsupportedDicom("DICOM float pixel data is not accepted; send integer pixel data")
    # The header parse read this element's header whole before it stopped: it is all there.
    if header.syntax == ImplicitVRLittleEndian:
        (length,), start = struct.unpack_from("<I", data, offset + 4), offset + 8
    elif data[offset + 4:offset + 6] in EXPLICIT_LONG_VRS:
        (length,), start = struct.unpack_from(f"{endian}I", data, offset + 8), offset + 12
    else:
        (length,), start = struct.unpack_from(f"{endian}H", data, offset + 6), offset + 8
    rows, columns = geometry.shape
    needed = rows * columns * geometry.dtype.itemsize
    if length == 0:
        raise NoPixelData("the DICOM's pixel data is empty")
    if length == 0xFFFFFFFF:
        raise MalformedDicom("malformed DICOM: encapsulated pixel data in an uncompressed transfer syntax")
    available = min(length, len(data) - start)
    if available < needed:
        raise TruncatedImage(f"the DICOM pixel data is truncated: {max(0, available)} of the {needed} "
                             "bytes its header declares")
    return np.frombuffer(data, dtype=geometry.dtype, count=rows * columns, offset=start).reshape(rows, columns)


def _stored_values(band: np.ndarray, geometry: DicomGeometry) -> np.ndarray:
    """The ``BitsStored`` low bits of each sample as int64, sign-extended when signed."""
    values = band.astype(np.int64)
    if geometry.bits_stored < geometry.bits_allocated:
        if geometry.signed:
            shift = 64 - geometry.bits_stored
            np.left_shift(values, shift, out=values)
            np.right_shift(values, shift, out=values)
        else:
            np.bitwise_and(values, (1 << geometry.bits_stored) - 1, out=values)
    return values


def _dicom_number(dataset: pydicom.Dataset, name: str) -> float:
    """The first value of a numeric attribute (several windows: the first is the default one)."""
    value = dataset[name].value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise MalformedDicom(f"malformed DICOM: {name} is not a finite number")
    return value


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The VOI window of DICOM PS3.3 C.11.2.1.2 onto [0, 1] (clipped by the caller)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return (values - center) / width + 0.5
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return (values - (center - 0.5)) / (width - 1) + 0.5


def _voi_rule(geometry: DicomGeometry):
    """The function from stored values (int64) to display values in [0, 1] before clipping."""
    dataset = geometry.header.dataset
    lut_modality = "ModalityLUTSequence" in dataset
    try:
        if lut_modality:
            def modality(values):
                return apply_modality_lut(values, dataset).astype(np.float64)
        else:
            slope = _finite(float(dataset.get("RescaleSlope") or 1.0), "RescaleSlope")
            intercept = _finite(float(dataset.get("RescaleIntercept") or 0.0), "RescaleIntercept")

            def modality(values):
                return values * slope + intercept
        if "VOILUTSequence" in dataset:
            top = float(2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1)
            return lambda values: apply_voi_lut(np.rint(modality(values)).astype(np.int64), dataset,
                                                prefer_lut=True).astype(np.float64) / top
        if "WindowCenter" in dataset and "WindowWidth" in dataset:
            center = _finite(_dicom_number(dataset, "WindowCenter"), "WindowCenter")
            width = _finite(_dicom_number(dataset, "WindowWidth"), "WindowWidth")
            function = str(dataset.get("VOILUTFunction") or "LINEAR").strip().upper()
            if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
                function = "LINEAR"
            if not (width >= 1 if function == "LINEAR" else width > 0):
                raise UnsupportedDicom(f"the DICOM window width {width:g} is not valid for {function}")
            return lambda values: _window(modality(values), center, width, function)
        low = -(1 << (geometry.bits_stored - 1)) if geometry.signed else 0
        high = low + (1 << geometry.bits_stored) - 1
        if lut_modality and geometry.bits_stored <= 16:
            ends = modality(np.arange(low, high + 1, dtype=np.int64))
        else:
            ends = modality(np.array([low, high], dtype=np.int64))
        lowest, span = float(ends.min()), float(ends.max() - ends.min())
        return lambda values: (modality(values) - lowest) / span if span > 0 else np.zeros(values.shape)
    except ImageError:
        raise
    except DICOM_PARSE_ERRORS:
        raise MalformedDicom("malformed DICOM: the rescale, window or LUT attributes cannot be read") from None


def dicom_to_gray8(data: bytes, geometry: DicomGeometry) -> np.ndarray:
    """The 8-bit display image of the module docstring's rule, converted band by band."""
    stored = _pixel_data(data, geometry)
    to_display = _voi_rule(geometry)
    invert = geometry.photometric == "MONOCHROME1"
    rows, columns = geometry.shape
    gray = np.empty((rows, columns), dtype=np.uint8)
    step = max(1, BAND_PIXELS // max(1, columns))
    for top in range(0, rows, step):
        try:
            display = np.asarray(to_display(_stored_values(stored[top:top + step], geometry)), dtype=np.float64)
        except DICOM_PARSE_ERRORS:
            raise MalformedDicom("malformed DICOM: its LUT does not fit its pixel values") from None
        np.clip(display, 0.0, 1.0, out=display)
        if invert:  # MONOCHROME1: the lowest value is white; air must be dark as in every other image
            np.subtract(1.0, display, out=display)
        display *= 255.0
        display += 0.5
        gray[top:top + step] = display.astype(np.uint8)
    return gray


def open_dicom(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> Image.Image:
    """The 8-bit gray image of a DICOM Part 10 file; its size is checked before any pixel is read."""
    geometry = _dicom_geometry(_dicom_header(data))
    rows, columns = geometry.shape
    _check_size(columns, rows, max_pixels, min_side)
    image = Image.fromarray(dicom_to_gray8(data, geometry))
    image.format = "DICOM"
    return image


def sixteen_bit_white(image: Image.Image) -> float:
    """The sample value that means white in a 16-bit gray image (the rule of the module docstring)."""
    bits = image.info.get(SIGNIFICANT_BITS) or 16
    if bits >= 16:
        return 65535.0  # no pass over the pixels: nothing can exceed it
    white = float(2**bits - 1)
    return white if image.getextrema()[1] <= white else 65535.0


def to_gray8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit gray; 16-bit images are scaled, not clipped."""
    if image.mode == "L":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        return Image.fromarray(_sixteen_bit_to_gray8(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas count as black background, as on a radiograph.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


def _sixteen_bit_to_gray8(image: Image.Image) -> np.ndarray:
    """``sample / white * 255 + 0.5`` in float32, clipped and truncated, as a table of the 65536
    sample values: bit for bit that arithmetic on every pixel, one lookup per pixel instead of four
    float passes, and one band at a time, so no full-size copy is made."""
    white = sixteen_bit_white(image)
    samples = np.arange(65536, dtype=np.float32)
    table = np.clip(samples / white * 255.0 + 0.5, 0, 255).astype(np.uint8)
    width, height = image.size
    gray = np.empty((height, width), dtype=np.uint8)
    step = max(1, BAND_PIXELS // max(1, width))
    for top in range(0, height, step):
        bottom = min(height, top + step)
        band = np.asarray(image.crop((0, top, width, bottom)))
        if band.dtype.kind not in "ui" or band.size and (band.min() < 0 or band.max() > 65535):
            raise NotAnImage(f"a {image.mode} image with samples outside 0-65535 is not a 16-bit gray image")
        gray[top:bottom] = table[band]
    return gray


def to_array(image: Image.Image, size: int) -> np.ndarray:
    """The network's input for one image: float32 ``(size, size, 1)`` in [0, 1]."""
    gray = to_gray8(image)
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(gray, dtype=np.float32) / 255.0)[..., np.newaxis]


def image_bytes_to_array(
    data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE
) -> np.ndarray:
    """Decode image bytes into the network's input for one image."""
    return to_array(open_image(data, max_pixels=max_pixels, min_side=min_side), size)
