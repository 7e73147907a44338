"""What a prediction request carries: the image of ``/predict``, the images of ``/predict/batch``.

Only the transport is checked here (media type, field names, counts, body size); whether the bytes
are a usable image is ``core.preprocess``'s call.
"""

from __future__ import annotations

from flask import Request
from werkzeug.datastructures import FileStorage

from api.errors import ApiError

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "application/dicom", "application/octet-stream")
MULTIPART = "multipart/form-data"
FIELD = "image"


def _missing_field(request: Request) -> ApiError:
    if FIELD in request.form:  # werkzeug reads a part without a filename as text: its bytes are gone
        return ApiError(400, "image_without_filename",
                        f"the multipart field {FIELD!r} has no filename, so it was read as text and its "
                        "bytes are lost; send it as a file part (Content-Disposition: form-data; "
                        f"name=\"{FIELD}\"; filename=\"x.png\"), e.g. curl -F {FIELD}=@x.png")
    return ApiError(400, "missing_field", f"multipart requests carry each image in a field {FIELD!r}")


def _unsupported(mimetype: str, accepted: str) -> ApiError:
    return ApiError(415, "unsupported_media_type",
                    f"Content-Type {mimetype or '(none)'} is not accepted; send {accepted}")


def single_image_bytes(request: Request) -> bytes:
    """The image of ``POST /predict``: the raw body, or the one multipart field ``image``."""
    mimetype = request.mimetype
    if mimetype == MULTIPART:
        uploads = request.files.getlist(FIELD)
        if not uploads:
            raise _missing_field(request)
        if len(uploads) > 1:
            raise ApiError(400, "too_many_images",
                           f"{len(uploads)} images sent; /predict takes one, /predict/batch several")
        return uploads[0].read()
    if mimetype in RAW_IMAGE_TYPES:
        return request.get_data(cache=False)
    raise _unsupported(mimetype, f"the image as {', '.join(RAW_IMAGE_TYPES)} or as the "
                                 f"{MULTIPART} field {FIELD!r}")


def batch_uploads(request: Request, max_images: int, max_bytes: int) -> list[FileStorage]:
    """The images of ``POST /predict/batch``: every multipart field ``image``, in order.

    Werkzeug keeps each file part over 500 kB in a temporary file, so a caller reading one upload
    at a time holds one image's bytes in memory, not the whole batch.
    """
    if request.mimetype != MULTIPART:
        raise _unsupported(request.mimetype, f"{MULTIPART} with one field {FIELD!r} per image")
    request.max_content_length = max_bytes
    uploads = request.files.getlist(FIELD)
    if not uploads or FIELD in request.form:
        raise _missing_field(request)
    if len(uploads) > max_images:
        raise ApiError(413, "too_many_images", f"{len(uploads)} images sent; a batch holds at most "
                       f"{max_images} (api.max_batch_images)")
    return uploads
