"""A document failing a step on its own: `PartitionError` (which document, its file, why),
the errors every step raises, and the one `Failure` a step ends with when some of its
documents failed (the run fails, those partitions show as failed, the others keep their
materializations: assets/batch.py)."""

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from resources.errors import DocgraphError, ErrorClass


@dataclass(frozen=True)
class PartitionError(DocgraphError):
    """One document failed a step: which, its file, why (error class and reason)."""

    partition: str
    path: str
    error_class: ErrorClass
    reason: str
    assets: tuple[str, ...] = ()  # the assets this failure left unmaterialized (the stage)

    def __str__(self) -> str:
        return f"document {self.partition} ({self.path}): {self.reason}"


def document_path(registry, key: str) -> str:
    """The registered file of a partition, for error messages ("?" if unregistered)."""
    entry = registry.lookup(key)
    return str(entry.path) if entry else "?"


def not_materialized(registry, key: str, what: str) -> PartitionError:
    """The error for a partition whose upstream was never materialized."""
    return PartitionError(key, document_path(registry, key), ErrorClass.NOT_MATERIALIZED,
                          f"{what} not materialized for this document yet")


@contextlib.contextmanager
def per_document(context: dg.AssetExecutionContext, registry, key: str,
                 failures: list[PartitionError]) -> Iterator[None]:
    """One document's share of a batch step: a PartitionError, or any unexpected exception
    (a bug: `internal_error`, traceback in the run's logs), fails that document only."""
    try:
        yield
    except PartitionError as error:
        failures.append(error)
    except Exception as exc:  # noqa: BLE001 - one document's surprise must not stop the rest
        context.log.exception(f"document {key}: unexpected {type(exc).__name__}")
        failures.append(PartitionError(key, document_path(registry, key),
                                       ErrorClass.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))


def gate_failure(registry, key: str, name: str, evaluated: bool = True) -> PartitionError:
    """`evaluated`: Dagster holds a failed evaluation of the latest materialization, rather
    than none (a run stopped between the two, say)."""
    why = ("did not pass for this document (its failed items are in that check's metadata)"
           if evaluated else f"has not judged this document's latest {name}")
    return PartitionError(
        key, document_path(registry, key), ErrorClass.UPSTREAM_CHECK_FAILED,
        f"{name}_success_rate {why}: re-materialize {name} for this document first")


def raise_failures(failures: list[PartitionError], attempted: int) -> None:
    if not failures:
        return
    documents = len({f.partition for f in failures})
    if len(failures) == 1:
        [only] = failures
        description = str(only)
        # str(): Dagster's metadata takes plain words, not our enum (resources/errors.py)
        metadata = {"document": only.partition, "path": only.path,
                    "error_class": str(only.error_class), "reason": only.reason}
    else:
        description = f"{documents} of {attempted} documents failed:\n" + "\n".join(
            f"- {', '.join(f.assets) + ': ' if f.assets else ''}{f}" for f in failures
        )
        metadata = {"error_classes": dg.MetadataValue.json(
            dict(Counter(str(f.error_class) for f in failures)))}
    metadata["failures"] = dg.MetadataValue.json([
        {"document": f.partition, "path": f.path, "error_class": str(f.error_class),
         "reason": f.reason, "assets": list(f.assets)} for f in failures
    ])
    metadata["attempted"] = attempted
    metadata["failed"] = documents
    # Bad input stays bad: retrying the step would only repeat these errors.
    raise dg.Failure(description=description, metadata=metadata, allow_retries=False)
