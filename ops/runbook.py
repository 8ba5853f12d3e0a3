"""What to do about each errorType: the runbook of docs/operations.md section 2, as data, so the
console shows the same advice beside each dead-letter group (tests/unit/test_console.py holds the
two to the same words)."""

from __future__ import annotations

from typing import Final

# errorTypes a row covers, and what to do: one entry per row of the table, in its order.
RUNBOOK: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (
        ("invalidRequestBody",),
        "A bug or a contract change in our Invox client. File a bug, fix it, deploy, then replay.",
    ),
    (
        ("inconsistentInput",),
        "Check the job's `consultationSessionId` and documents. Fix the data upstream and resubmit.",
    ),
    (
        ("invalidApiVersionForEndpoint",),
        "Fix the setting, restart the workers, then replay with `--error-type invalidApiVersionForEndpoint`.",
    ),
    (
        ("summaryIsRequired", "templateIsRequired"),
        "A bug in the pipeline. File it, fix it, then replay.",
    ),
    (
        ("invalidTemplate",),
        "Fix the template upstream and resubmit the job. Replaying does not help.",
    ),
    (
        ("invalidLanguage", "invalidOutputFormat", "missingOutputLanguage"),
        "Fix the job upstream and resubmit.",
    ),
    (
        ("transcriptionNotFound",),
        "The vendor expired or lost it. Resubmit the job, which uploads the audio again.",
    ),
    (("missingPermission",), "Ask the vendor to fix the account, then replay."),
    (
        ("invalidMessage",),
        "Inspect it with `scribe-dlq show --redact` and fix the publisher. Replaying the same bytes fails again.",
    ),
    (("unsupportedSchemaVersion",), "Deploy a worker that reads it, then replay."),
    (
        ("providerNotConfigured",),
        "Configure it (for example `SCRIBE_INVOX_BASE_URL` and a token), restart, then replay.",
    ),
    (
        ("urlNotAllowed",),
        "Use https, or add the host to `SCRIBE_URL_ALLOWLIST` if you trust it, then replay.",
    ),
    (
        ("pathNotAllowed",),
        "Fix the path upstream and resubmit. Replaying the same job fails again.",
    ),
    (
        ("audioUnavailable", "documentUnavailable"),
        "Check the storage or URL (see `SCRIBE_STORAGE_ROOT`), then replay.",
    ),
    (
        ("unsupportedAudio",),
        "Check the file plays to its end; re-export it from the recorder and resubmit. Replaying does not help.",
    ),
    (("fileTooLarge",), "Compress the recording (Opus or AAC) and resubmit."),
    (
        ("audioTooLong",),
        "Split the recording upstream, or raise the job maximum if the vendor and your budget allow. Replaying does not help.",
    ),
    (
        ("unauthorized",),
        "Rotate `SCRIBE_INTRON_API_KEY` or the Invox token/app key, restart, then replay.",
    ),
    (("forbidden",), "Same as a 403 errorType: check the account."),
    (("badRequest",), "Look at `x-http-status` and `x-error-message`, then file a bug."),
    (
        ("rateLimited",),
        "Check the vendor quota and the number of replicas calling the vendor (§5). Replay slowly, for example `--rate 1`.",
    ),
    (
        ("upstreamUnavailable", "upstreamTimeout", "connectionFailed"),
        "Check the vendor's status. When it is back, replay with `--error-type ...`.",
    ),
    (("malformedResponse",), "A contract change or a vendor bug. File it."),
    (("transcriptionFailed",), "Check the audio. Resubmit if it is fine."),
    (
        ("transcriptionTimedOut",),
        "Replay to `poll`: one status call takes the result if the vendor has finished since. If it is still pending, the job fails again at once because the deadline counts from submission. In that case resubmit the job.",
    ),
    (
        ("unknownVendorStatus",),
        "Check the vendor's changelog, teach the client the status, then replay.",
    ),
    (
        ("deliveryLimitExceeded",),
        "Look at the worker logs around `x-death` time for crashes or OOM kills. Fix, then replay.",
    ),
    (("internalError",), "Fix the bug, deploy, then replay."),
    (
        ("conflictingJob",),
        "Give the new job its own jobId upstream and resubmit. Replaying does not help.",
    ),
    (("incompatibleProviders",), "Fix the job's providers upstream and resubmit."),
    (
        ("noSpeech",),
        "Check the recording has speech (microphone, wrong file). Resubmit with the right audio.",
    ),
    (
        ("transcriptTooLarge", "templateTooLarge"),
        "Split the consultation or trim the template upstream. Replaying does not help.",
    ),
    (
        ("summaryTimedOut", "noteTimedOut"),
        "Raise the budget if the machine is slow, restart, then replay.",
    ),
    (
        ("untrustedHandle",),
        "Someone published a poll message by hand, or the key changed. Check the key; resubmit the job.",
    ),
    (
        ("uploadOutcomeUnknown",),
        "Check the vendor's console for the upload. If it is not there, replay (which uploads again).",
    ),
    (
        ("ledgerUnavailable",),
        "Check Redis (`SCRIBE_REDIS_URL`). When it is back, replay with `--error-type ledgerUnavailable`.",
    ),
)


def advice(error_type: str) -> str | None:
    """The runbook's advice for an errorType ("other": one outside the catalogue)."""
    for types, text in RUNBOOK:
        if error_type in types:
            return text
    return None
