"""The upload panel: analyse a recording from memory with the `serd analyze` pipeline; keep nothing."""

from __future__ import annotations

import io
import logging
import threading
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import Any

from serd.dashboard.settings import DashboardSettings

_LOGGER = logging.getLogger(__name__)

FILENAME_HEADER = "X-Filename"
UPLOAD_EXTENSIONS = (".wav", ".flac", ".ogg")
MAX_UPLOAD_DURATION_S = 5 * 60.0
"""Longer recordings are refused: on a Pi each minute of audio costs seconds of CPU that the live view shares."""
ANALYSIS_WAIT_S = 60.0
"""How long an upload waits for the one running analysis before getting 503 (one model, one core)."""


class UploadError(ValueError):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Analyzer:
    """Loads the model on first use and runs one analysis at a time (one interpreter, one core)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._model = None

    def model_path(self) -> Path:
        from serd.model import resolve_model_path

        return resolve_model_path(self.settings.model)

    def available(self) -> bool:
        path = self.model_path()
        return path.is_file() and path.with_suffix(".json").is_file()

    def _load(self):
        from serd.model import Model, ModelError

        if self._model is None:
            try:
                self._model = Model(self.model_path())
            except ModelError as exc:
                raise UploadError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"model not available: {exc} (start the dashboard with --model NAME_OR_PATH)",
                ) from None
            _LOGGER.info("upload analysis: model %s (%s)", self._model.model_id, self._model.backend)
        return self._model

    def analyze(self, data: bytes, filename: str) -> dict[str, Any]:
        from serd.analysis import GateSettings, analyze_file, result_to_json
        from serd.audiofile import AudioFileError, file_duration_s

        if not self._lock.acquire(timeout=ANALYSIS_WAIT_S):
            raise UploadError(HTTPStatus.SERVICE_UNAVAILABLE, "busy with another recording; try again in a moment")
        try:
            model = self._load()
            audio = io.BytesIO(data)
            audio.name = filename  # how error messages name it; the bytes never leave memory
            try:
                duration_s = file_duration_s(audio)
                if duration_s > MAX_UPLOAD_DURATION_S:
                    raise UploadError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"{filename}: recording too long ({duration_s / 60:.1f} min; "
                        f"the limit is {MAX_UPLOAD_DURATION_S / 60:.0f} min)",
                    )
                audio.seek(0)
                gate = GateSettings(self.settings.gate_dbfs, 1, self.settings.vad, self.settings.vad_threshold)
                result = analyze_file(audio, model, self.settings.hop_s, gate)
            except AudioFileError as exc:
                raise UploadError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            body = result_to_json(result, filename)
            body.update(
                labels=list(model.labels),
                model=model.model_id,
                duration_s=round(duration_s, 3),
                window_s=model.params.window_samples / model.params.sample_rate,
                hop_s=self.settings.hop_s,
                speech_windows=sum(1 for w in result.windows if w.speech),
            )
            return body
        finally:
            self._lock.release()


def clean_filename(raw: str | None) -> str:
    """The upload's base name, URL-decoded, without control characters (it is echoed to the page)."""
    if not raw:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"send the file name in the {FILENAME_HEADER} header")
    name = urllib.parse.unquote(raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:200].strip()
    if not name:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"{FILENAME_HEADER}: empty file name")
    return name


def check_extension(filename: str) -> None:
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_EXTENSIONS:
        raise UploadError(
            HTTPStatus.BAD_REQUEST,
            f"{filename}: unsupported file type {suffix or '(none)'}; choose a {', '.join(UPLOAD_EXTENSIONS)} recording",
        )
