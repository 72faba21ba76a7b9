"""assets/dagster_compat.py against the installed Dagster: the names it copies are the
ones Dagster writes and reads, and the private types it imports behave as it relies on."""

import dagster as dg
from dagster._core.definitions import data_version as dagster_versions
from dagster._core.storage import tags as dagster_tags

from assets import dagster_compat as compat


def test_it_was_checked_against_the_installed_dagster():
    assert dg.__version__ == compat.TESTED_WITH, (
        f"Dagster {dg.__version__} is installed; re-check assets/dagster_compat.py against it "
        f"(this test file says how), then set TESTED_WITH")


def test_tag_names_are_dagsters_own():
    key = dg.AssetKey("chunks")
    assert compat.RANGE_START_TAG == dagster_tags.ASSET_PARTITION_RANGE_START_TAG
    assert compat.RANGE_END_TAG == dagster_tags.ASSET_PARTITION_RANGE_END_TAG
    assert compat.DATA_VERSION_TAG == dagster_versions.DATA_VERSION_TAG
    assert compat.CODE_VERSION_TAG == dagster_versions.CODE_VERSION_TAG
    assert compat.USER_VERSION_TAG == dagster_versions.DATA_VERSION_IS_USER_PROVIDED_TAG
    assert compat.INPUT_VERSION_TAG.format("chunks") == \
        dagster_versions.get_input_data_version_tag(key)
    assert compat.INPUT_POINTER_TAG.format("chunks") == \
        dagster_versions.get_input_event_pointer_tag(key)


def test_check_state_reads_a_partitions_current_verdict(instance):
    """A partitioned check's evaluation that targets the partition's latest
    materialization reads passed/failed; a newer materialization makes it not current."""
    instance.add_dynamic_partitions("documents", ["a", "b"])
    check_key = dg.AssetCheckKey(dg.AssetKey("chunk_metadata"), "chunk_metadata_success_rate")
    for partition, passed in (("a", True), ("b", False)):
        instance.report_runless_asset_event(dg.AssetMaterialization(check_key.asset_key,
                                                                    partition=partition))
        [latest] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=check_key.asset_key, asset_partitions=[partition]),
            limit=1).records
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=check_key.asset_key, check_name=check_key.name, passed=passed,
            partition=partition, target_materialization_data=compat.TargetMaterialization(
                storage_id=latest.storage_id, run_id=latest.run_id,
                timestamp=latest.timestamp)))
    assert compat.check_states(instance, check_key, ["a", "b", "c"]) == {
        "a": True, "b": False, "c": None}
    instance.report_runless_asset_event(dg.AssetMaterialization(check_key.asset_key,
                                                                partition="a"))
    assert compat.check_passed(instance, check_key, "a") is None


def test_latest_materialization_ids_are_each_partitions_newest(instance):
    key = dg.AssetKey("chunks")
    for partition in ("a", "b", "a"):
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
    newest = {p: instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[p]), limit=1).records[0]
        for p in ("a", "b")}
    assert compat.latest_materialization_ids(instance, key, ["a", "b", "c"]) == {
        p: record.storage_id for p, record in newest.items()}
    assert compat.latest_materialization_ids(instance, key, ["b"]) == {
        "b": newest["b"].storage_id}


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]))
def probe_a() -> None:
    pass


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]), deps=[probe_a])
def probe_b() -> None:
    pass


def test_materialized_in_run_is_what_the_runs_events_say(instance):
    runs = [dg.materialize([probe_a, probe_b], instance=instance, partition_key=p).run_id
            for p in ("a", "b")]
    for run_id in runs:
        logged = sorted((e.dagster_event.asset_key.to_user_string(), e.dagster_event.partition)
                        for e in instance.all_logs(
                            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION))
        assert len(logged) == 2
        assert sorted(compat.materialized_in_run(instance, run_id)) == logged
    assert compat.materialized_in_run(instance, "no-such-run") == []


def test_latest_materialization_row_is_the_runs_latest_record_read_from_the_index(
        instance):
    key = dg.AssetKey("chunks")
    assert compat.latest_materialization_row(instance, key, "a", "") is None
    for partition in ("a", "b", "a"):
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
    for partition in ("a", "b"):
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        storage_id, timestamp = compat.latest_materialization_row(
            instance, key, partition, record.run_id)
        assert storage_id == record.storage_id
        assert abs(timestamp - record.timestamp) < 1e-3
    assert compat.latest_materialization_row(instance, key, "a", "another run") is None


def test_checks_planned_after_a_run_are_other_runs_later_rows(instance):
    """Two runs plan the same partitioned check: the first sees the second's row, the
    second sees nothing after its own, and a run that planned none sees nothing."""
    partitions = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=partitions, check_specs=[
        dg.AssetCheckSpec("ok", asset="probe_checked", partitions_def=partitions)])
    def probe_checked():
        yield dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=True)])

    first, second = (dg.materialize([probe_checked], instance=instance, partition_key=p)
                     for p in ("a", "a"))
    check = dg.AssetCheckKey(dg.AssetKey("probe_checked"), "ok")
    assert compat.checks_planned_after(instance, first.run_id, [check], ["a", "b"]) == [
        (check.asset_key, "a", second.run_id, compat.CheckStatus.SUCCEEDED)]
    assert compat.checks_planned_after(instance, first.run_id, [check], ["b"]) == []
    assert compat.checks_planned_after(instance, second.run_id, [check], ["a"]) == []
    assert compat.checks_planned_after(instance, "no such run", [check], ["a"]) == []
    assert compat.checks_planned_after(instance, first.run_id, [], ["a"]) == []


def test_the_celery_executor_polls_at_our_tick(monkeypatch):
    """pipeline_defs/definitions.py shortens dagster-celery's poll, a module constant its
    loop reads at each tick."""
    import inspect

    from dagster_celery import core_execution_loop

    from pipeline_defs import definitions

    assert "time.sleep(TICK_SECONDS)" in inspect.getsource(core_execution_loop)
    monkeypatch.setattr(core_execution_loop, "TICK_SECONDS", 1)
    monkeypatch.setenv("DOCGRAPH_CELERY_BROKER", "redis://127.0.0.1:1")
    definitions.executor()
    assert core_execution_loop.TICK_SECONDS == definitions.CELERY_POLL_SECONDS
