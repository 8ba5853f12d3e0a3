"""What to do about each errorType: the runbook of docs/operations.md section 2, as data, so the
console shows the same advice beside each dead-letter group (tests/unit/test_console.py holds the
two to the same words)."""

from __future__ import annotations

from typing import Final

from schemas.errors import ErrorType

# errorTypes a row covers, and what to do: one entry per row of the table, in its order.
RUNBOOK: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (
        (ErrorType.INVALID_REQUEST_BODY,),
        "A bug or a contract change in our Invox client. File a bug, fix it, deploy, then replay.",
    ),
    (
        (ErrorType.INCONSISTENT_INPUT,),
        "Check the job's `consultationSessionId` and documents. Fix the data upstream and resubmit.",
    ),
    (
        (ErrorType.INVALID_API_VERSION_FOR_ENDPOINT,),
        "Fix the setting, restart the workers, then replay with `--error-type invalidApiVersionForEndpoint`.",
    ),
    (
        (
            ErrorType.SUMMARY_IS_REQUIRED,
            ErrorType.TEMPLATE_IS_REQUIRED,
        ),
        "A bug in the pipeline. File it, fix it, then replay.",
    ),
    (
        (ErrorType.INVALID_TEMPLATE,),
        "Fix the template upstream and resubmit the job. Replaying does not help.",
    ),
    (
        (
            ErrorType.INVALID_LANGUAGE,
            ErrorType.INVALID_OUTPUT_FORMAT,
            ErrorType.MISSING_OUTPUT_LANGUAGE,
        ),
        "Fix the job upstream and resubmit.",
    ),
    (
        (ErrorType.TRANSCRIPTION_NOT_FOUND,),
        "The vendor expired or lost it. Resubmit the job, which uploads the audio again.",
    ),
    (("missingPermission",), "Ask the vendor to fix the account, then replay."),
    (
        (ErrorType.INVALID_MESSAGE,),
        "Inspect it with `scribe-dlq show --redact` and fix the publisher. Replaying the same bytes fails again.",
    ),
    ((ErrorType.UNSUPPORTED_SCHEMA_VERSION,), "Deploy a worker that reads it, then replay."),
    (
        (ErrorType.PROVIDER_NOT_CONFIGURED,),
        "Configure it (for example `SCRIBE_INVOX_BASE_URL` and a token), restart, then replay.",
    ),
    (
        (ErrorType.URL_NOT_ALLOWED,),
        "Use https, or add the host to `SCRIBE_URL_ALLOWLIST` if you trust it, then replay.",
    ),
    (
        (ErrorType.PATH_NOT_ALLOWED,),
        "Fix the path upstream and resubmit. Replaying the same job fails again.",
    ),
    (
        (
            ErrorType.AUDIO_UNAVAILABLE,
            ErrorType.DOCUMENT_UNAVAILABLE,
        ),
        "Check the storage or URL (see `SCRIBE_STORAGE_ROOT`), then replay.",
    ),
    (
        (ErrorType.UNSUPPORTED_AUDIO,),
        "Check the file plays to its end; re-export it from the recorder and resubmit. Replaying does not help.",
    ),
    ((ErrorType.FILE_TOO_LARGE,), "Compress the recording (Opus or AAC) and resubmit."),
    (
        (ErrorType.AUDIO_TOO_LONG,),
        "Split the recording upstream, or raise the job maximum if the vendor and your budget allow. Replaying does not help.",
    ),
    (
        (ErrorType.UNAUTHORIZED,),
        "Rotate `SCRIBE_INTRON_API_KEY` or the Invox token/app key, restart, then replay.",
    ),
    ((ErrorType.FORBIDDEN,), "Same as a 403 errorType: check the account."),
    ((ErrorType.BAD_REQUEST,), "Look at `x-http-status` and `x-error-message`, then file a bug."),
    (
        (ErrorType.RATE_LIMITED,),
        "Check the vendor quota and the number of replicas calling the vendor (§5). Replay slowly, for example `--rate 1`.",
    ),
    (
        (
            ErrorType.UPSTREAM_UNAVAILABLE,
            ErrorType.UPSTREAM_TIMEOUT,
            ErrorType.CONNECTION_FAILED,
        ),
        "Check the vendor's status. When it is back, replay with `--error-type ...`.",
    ),
    ((ErrorType.MALFORMED_RESPONSE,), "A contract change or a vendor bug. File it."),
    ((ErrorType.TRANSCRIPTION_FAILED,), "Check the audio. Resubmit if it is fine."),
    (
        (ErrorType.TRANSCRIPTION_TIMED_OUT,),
        "Replay to `poll`: one status call takes the result if the vendor has finished since. If it is still pending, the job fails again at once because the deadline counts from submission. In that case resubmit the job.",
    ),
    (
        (ErrorType.UNKNOWN_VENDOR_STATUS,),
        "Check the vendor's changelog, teach the client the status, then replay.",
    ),
    (
        (ErrorType.DELIVERY_LIMIT_EXCEEDED,),
        "Look at the worker logs around `x-death` time for crashes or OOM kills. Fix, then replay.",
    ),
    ((ErrorType.INTERNAL_ERROR,), "Fix the bug, deploy, then replay."),
    (
        (ErrorType.CONFLICTING_JOB,),
        "Give the new job its own jobId upstream and resubmit. Replaying does not help.",
    ),
    ((ErrorType.INCOMPATIBLE_PROVIDERS,), "Fix the job's providers upstream and resubmit."),
    (
        (ErrorType.NO_SPEECH,),
        "Check the recording has speech (microphone, wrong file). Resubmit with the right audio.",
    ),
    (
        (
            ErrorType.TRANSCRIPT_TOO_LARGE,
            ErrorType.TEMPLATE_TOO_LARGE,
        ),
        "Split the consultation or trim the template upstream. Replaying does not help.",
    ),
    (
        (
            ErrorType.SUMMARY_TIMED_OUT,
            ErrorType.NOTE_TIMED_OUT,
        ),
        "Raise the budget if the machine is slow, restart, then replay.",
    ),
    (
        (ErrorType.UNTRUSTED_HANDLE,),
        "Someone published a poll message by hand, or the key changed. Check the key; resubmit the job.",
    ),
    (
        (ErrorType.UPLOAD_OUTCOME_UNKNOWN,),
        "Check the vendor's console for the upload. If it is not there, replay (which uploads again).",
    ),
    (
        (ErrorType.LEDGER_UNAVAILABLE,),
        "Check Redis (`SCRIBE_REDIS_URL`). When it is back, replay with `--error-type ledgerUnavailable`.",
    ),
    (
        (ErrorType.PAYLOAD_UNDECRYPTABLE,),
        "Add the key id the `x-payload-key-id` header names to `SCRIBE_PAYLOAD_KEYS` of the workers (and of `scribe-dlq`), restart, then replay with `--error-type payloadUndecryptable`. A tag failure with the right key means the body or its headers were altered: do not replay.",
    ),
)


def advice(error_type: str) -> str | None:
    """The runbook's advice for an errorType ("other": one outside the catalogue)."""
    for types, text in RUNBOOK:
        if error_type in types:
            return text
    return None
