"""Every error class docgraph reports, and the one root of its exceptions.

An error class is the stable word for why something failed. It is on every failed
document (a step's Failure metadata, the CLI summary), every failed LLM item (the
`error_class` column of an LLM asset's rows, `failed_by_class`) and every DocgraphError.
The README's "Documents and failures" table lists the same members with what to do about
each; tests/test_errors.py keeps the two, and the code, in step.

Members are StrEnum: they compare equal to their words, so stored rows and metadata that
hold the plain strings still match them. Dagster's text metadata takes plain str only (it
refuses enums it does not know), so code that writes one there writes `str(member)`.
"""

import enum


class ErrorClass(enum.StrEnum):
    # -- reading a document: the `documents` asset (assets/documents.py, assets/ingest.py)
    UNREGISTERED = "unregistered"  # no file registered for the key: `docgraph add` it
    VANISHED = "vanished"  # the registered file is gone: restore it, or `docgraph remove`
    NOT_A_FILE = "not_a_file"  # the path is a directory: register the files inside it
    UNREADABLE = "unreadable"  # permission denied: let docgraph's user read the file
    TOO_LARGE = "too_large"  # over `max_bytes`: split the file, or raise max_bytes
    UNSUPPORTED_FORMAT = "unsupported_format"  # not .txt/.md/.html/.pdf: convert it
    EMPTY = "empty"  # empty, blank, or no text left after extraction: nothing to ingest
    BINARY = "binary"  # NUL bytes or many control bytes: not a text file
    UNDECODABLE = "undecodable"  # not UTF-8 (or UTF-16 with a BOM): re-save it as UTF-8
    NO_TEXT_LAYER = "no_text_layer"  # a PDF of scanned pages: run OCR first
    ENCRYPTED_PDF = "encrypted_pdf"  # needs a password: save an unprotected copy
    MALFORMED_PDF = "malformed_pdf"  # pypdf cannot read it: re-export the PDF
    # -- any step, for one document (assets/failures.py, assets/upstream.py)
    NOT_MATERIALIZED = "not_materialized"  # an input was never materialized: run it first
    UPSTREAM_CHECK_FAILED = "upstream_check_failed"  # an input's gate failed: fix, re-run it
    UPSTREAM_STALE = "upstream_stale"  # an input is from older chunks: re-materialize it
    INTERNAL_ERROR = "internal_error"  # a bug: the traceback is in the run's logs
    # -- one LLM call, an item of an LLM asset (resources/llm); the engine retried the
    # retryable ones (rate_limited, server_error, timeout, connection) as far as allowed
    RATE_LIMITED = "rate_limited"  # 429s past the retries: lower LLM_RPM or concurrency
    SERVER_ERROR = "server_error"  # 5xx, or a body that was not the API's, past the retries
    TIMEOUT = "timeout"  # no answer within LLM_TIMEOUT_SECONDS, past the retries
    CONNECTION = "connection"  # the endpoint could not be reached: check OPENAI_BASE_URL
    INVALID_OUTPUT = "invalid_output"  # no valid answer after LLM_MAX_REPAIRS repair turns
    CLIENT_ERROR = "client_error"  # any other 4xx, or a request over a minute's LLM_TPM
    CIRCUIT_OPEN = "circuit_open"  # the provider was down over LLM_MAX_OUTAGE_SECONDS
    # with LLM_BATCH_FALLBACK=fail, an item the Batch API did not answer
    BATCH_FAILED = "batch_failed"  # its line failed, or its batch was cancelled: re-run
    BATCH_EXPIRED = "batch_expired"  # its batch passed the 24h window: re-run, or go sync
    # -- the graph step (assets/graph.py)
    GRAPH_WRITE_FAILED = "graph_write_failed"  # Neo4j refused the write, or its rows clash
    SCHEMA_MISMATCH = "schema_mismatch"  # the vector index has another size: drop it
    # -- what the CLI reports (pipeline_defs/)
    GATE_FAILED = "gate_failed"  # materialized, but too many of its items failed
    RUN_ERROR = "run_error"  # the run failed before any step ran: see the run's logs
    STEP_ERROR = "step_error"  # a step failed as a whole: its first line, then the logs
    SLOT_WAIT_TIMEOUT = "slot_wait_timeout"  # no pool slot within --slot-wait-seconds


class DocgraphError(Exception):
    """The root of docgraph's exceptions: each carries the ErrorClass it is reported as.

    Not every stop is an error: pipeline_defs.run_launch.Interrupted (SIGINT, SIGTERM)
    is a signal to stop and stays a BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it.
    """

    error_class: ErrorClass

    def __init__(self, error_class: ErrorClass, message: str):
        super().__init__(message)
        self.error_class = error_class
