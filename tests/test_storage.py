"""The IO manager round-trips DataFrames and models, per partition, atomically."""

import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from assets.models import Document
from resources.storage import AssetStore, DocgraphIOManager

DOC = Document(
    key="k", path="/k.md", format="md", title="T", text="hello", n_chars=5, n_bytes=5,
    n_pages=None, source_sha256="a" * 64, text_sha256="b" * 64,
)


def test_partitioned_round_trip(tmp_path):
    parts = dg.StaticPartitionsDefinition(["p1", "p2"])

    @dg.asset(partitions_def=parts)
    def frames(context) -> pd.DataFrame:
        return pd.DataFrame({"key": [context.partition_key], "n": [1]})

    @dg.asset(partitions_def=parts)
    def models(context) -> Document:
        return DOC.model_copy(update={"key": context.partition_key})

    @dg.asset(deps=[], ins={"frames": dg.AssetIn(), "models": dg.AssetIn()})
    def catalog(frames: dict[str, pd.DataFrame], models: dict[str, Document]) -> pd.DataFrame:
        assert sorted(frames) == sorted(models) == ["p1", "p2"]
        return pd.concat(frames.values())

    io = DocgraphIOManager(store=AssetStore(base_path=str(tmp_path / "store")))
    with dg.instance_for_test() as instance:
        for key in ("p1", "p2"):
            result = dg.materialize(
                [frames, models], partition_key=key, resources={"io_manager": io},
                instance=instance,
            )
            assert result.success
        result = dg.materialize(
            [frames.to_source_asset(), models.to_source_asset(), catalog],
            selection=[catalog], resources={"io_manager": io}, instance=instance,
        )
    assert result.success
    assert sorted(result.output_for_node("catalog")["key"]) == ["p1", "p2"]
    assert (tmp_path / "store/frames/p1.parquet").exists()
    assert Document.model_validate_json((tmp_path / "store/models/p2.json").read_text()).key == "p2"
    assert not list((tmp_path / "store").rglob("*.tmp"))


def test_missing_partition_names_asset_and_path(tmp_path):
    store = AssetStore(base_path=str(tmp_path))
    with pytest.raises(dg.Failure, match="chunks partition 'nope'.*materialize it first"):
        store.read(dg.AssetKey("chunks"), "nope", pd.DataFrame)


def test_the_base_path_comes_from_the_resource_else_the_environment(tmp_path, monkeypatch,
                                                                    docgraph_home):
    monkeypatch.delenv("DOCGRAPH_ASSETS", raising=False)
    assert AssetStore().root() == UPath(docgraph_home / "assets")
    monkeypatch.setenv("DOCGRAPH_ASSETS", str(tmp_path / "shared"))
    written = AssetStore().write(dg.AssetKey("documents"), "k", DOC)
    assert written.path.startswith(str(tmp_path / "shared"))
    assert AssetStore().read(dg.AssetKey("documents"), "k", Document) == DOC
    assert AssetStore(base_path=str(tmp_path / "own")).root() == UPath(tmp_path / "own")


def test_the_store_follows_the_environment_and_the_cwd_though_paths_are_remembered(
    tmp_path, monkeypatch
):
    # resources/paths.py remembers what a setting resolves to: a new setting, or the same
    # relative one from another working directory, must still resolve anew
    monkeypatch.delenv("DOCGRAPH_ASSETS", raising=False)
    monkeypatch.delenv("DOCGRAPH_HOME", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "one"))
    assert AssetStore().root() == UPath(tmp_path / "one" / "docgraph" / "assets")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "two"))
    assert AssetStore().root() == UPath(tmp_path / "two" / "docgraph" / "assets")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        monkeypatch.setenv("DOCGRAPH_HOME", "home")
        assert AssetStore().root() == UPath(tmp_path / folder / "home" / "assets")


def test_rows_are_the_frames_chosen_columns_as_plain_values(tmp_path):
    store = AssetStore(base_path=str(tmp_path))
    key = dg.AssetKey("document_themes")
    frame = pd.DataFrame({"signature": ["a", "b"], "score": [0.5, None],
                          "embedding": [[1.0, 2.0], None], "unused": ["x", "y"]})
    store.write(key, "doc", frame)
    assert store.read_rows(key, "doc", ["signature", "score", "embedding"]) == [
        {"signature": "a", "score": 0.5, "embedding": [1.0, 2.0]},
        {"signature": "b", "score": None, "embedding": None}]
    with pytest.raises(dg.Failure, match="document_themes partition 'nope'.*materialize"):
        store.read_rows(key, "nope", ["signature"])
