"""inbox_sensor: new files become partitions with runs, edits re-run, deletions remove."""

import os
import time

import dagster as dg

from pipeline_defs.sensors import inbox_sensor
from resources.neo4j.resource import Neo4jResource
from resources.registry import DocumentRegistry


def _write(path, text, age=60):
    path.write_text(text)
    past = time.time() - age
    os.utime(path, (past, past))


def _tick(instance, registry, cursor, neo4j_db: Neo4jResource | None = None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"registry": registry, "neo4j_db": neo4j_db or Neo4jResource()},
    ) as context:
        result = inbox_sensor(context)
    # apply the partition requests the way the sensor daemon does
    for request in getattr(result, "dynamic_partitions_requests", []):
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions("documents", list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition("documents", key)
    return result


def _keys(instance, request: dg.RunRequest) -> list[str]:
    """The partitions a run request covers: one key, or a range in partition order."""
    if request.partition_key:
        return [request.partition_key]
    ordered = instance.get_dynamic_partitions("documents")
    span = request.partition_key_range
    return ordered[ordered.index(span.start) : ordered.index(span.end) + 1]


def test_inbox_lifecycle(tmp_path, instance, capfd):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    registry = DocumentRegistry(inbox_dir=str(inbox))
    _write(inbox / "a.md", "# A\n\nPriya Raman")
    _write(inbox / "b.txt", "Marcus Feld")
    _write(inbox / "notes.docx", "ignored type")
    _write(inbox / "writing.txt", "still being written", age=0)

    first = _tick(instance, registry, None)
    # new files arrive together, so they are batched into one run over their range
    [batch] = first.run_requests
    keys = _keys(instance, batch)
    assert len(keys) == 2
    assert instance.get_dynamic_partitions("documents") == keys

    # nothing changed: no runs, no partition changes
    second = _tick(instance, registry, first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []

    # an edit requests exactly one run, for that document, with a new run key;
    # the file that has settled now is picked up too
    _write(inbox / "a.md", "# A\n\nPriya Raman, edited")
    os.utime(inbox / "writing.txt", (time.time() - 60, time.time() - 60))
    third = _tick(instance, registry, second.cursor)
    a_key = registry.register([inbox / "a.md"])[0].key
    w_key = registry.register([inbox / "writing.txt"])[0].key
    # a.md and writing.txt are not neighbours in partition order (b.txt lies between)
    assert sorted(_keys(instance, r)[0] for r in third.run_requests) == sorted([a_key, w_key])
    assert batch.run_key not in {r.run_key for r in third.run_requests}

    # editing a.md back to its first content is a change too: a run key never used before
    _write(inbox / "a.md", "# A\n\nPriya Raman")
    reverted = _tick(instance, registry, third.cursor)
    [back] = reverted.run_requests
    used = {r.run_key for t in (first, second, third) for r in t.run_requests}
    assert back.partition_key == a_key and back.run_key not in used

    # a deleted file's partition is removed, with a log line naming it
    (inbox / "b.txt").unlink()
    b_key = next(k for k in keys if k != a_key)
    fourth = _tick(instance, registry, reverted.cursor)
    assert fourth.run_requests == []
    assert b_key not in instance.get_dynamic_partitions("documents")
    assert registry.lookup(b_key) is None
    assert "b.txt was deleted: removing partition" in capfd.readouterr().err


def test_missing_inbox_is_a_skip_with_the_path(tmp_path, instance):
    registry = DocumentRegistry(inbox_dir=str(tmp_path / "nowhere"))
    result = _tick(instance, registry, None)
    assert isinstance(result, dg.SkipReason) and "nowhere" in result.skip_message


def test_a_partition_removed_by_hand_and_found_again_gets_a_run(tmp_path, instance):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    registry = DocumentRegistry(inbox_dir=str(inbox))
    _write(inbox / "a.md", "# A\n\nPriya Raman")
    first = _tick(instance, registry, None)
    [key] = instance.get_dynamic_partitions("documents")
    # `docgraph remove` while the file stays in the inbox
    registry.remove([key])
    instance.delete_dynamic_partition("documents", key)
    second = _tick(instance, registry, first.cursor)
    assert instance.get_dynamic_partitions("documents") == [key]
    assert [r.partition_key for r in second.run_requests] == [key]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
