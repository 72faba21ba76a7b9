"""Asset storage: DataFrames as Parquet, pydantic models as JSON, one file per partition.

`AssetStore` is the one place that knows paths and formats. Assets that materialize a
batch of partitions in one step write through it directly (see assets/batch.py);
`DocgraphIOManager` wraps the same store for assets that return a value.

Paths go through universal-pathlib, so `base_path` (else $DOCGRAPH_ASSETS, else
`<docgraph home>/assets`) can be a local folder, a folder on shared storage that every
worker mounts, or a bucket URL (`s3://…`, `gs://…`) once the matching fsspec driver is
installed. Local writes go to a temporary file that is renamed into place, so a
crashed step never leaves a half-written file behind.
"""

import collections.abc
import io
import os
import tempfile
import typing

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel
from upath import UPath

from resources.paths import docgraph_home

ASSETS_ENV = "DOCGRAPH_ASSETS"
UNPARTITIONED = "__all__"
_LOCAL_PROTOCOLS = ("", "file", "local")


class AssetStore(dg.ConfigurableResource):
    base_path: str = ""

    def root(self) -> UPath:
        base = self.base_path or os.environ.get(ASSETS_ENV, "")
        return UPath(base) if base else UPath(docgraph_home() / "assets")

    def path(self, asset_key: dg.AssetKey, partition: str, kind: type) -> UPath:
        suffix = ".json" if isinstance(kind, type) and issubclass(kind, BaseModel) else ".parquet"
        return self.root().joinpath(*asset_key.path, f"{partition}{suffix}")

    def write(self, asset_key: dg.AssetKey, partition: str, value: object) -> UPath:
        if isinstance(value, pd.DataFrame):
            buffer = io.BytesIO()
            value.to_parquet(buffer, index=False)
            data = buffer.getvalue()
        elif isinstance(value, BaseModel):
            data = value.model_dump_json().encode()
        else:
            raise dg.Failure(
                f"{asset_key.to_user_string()}: cannot store {type(value).__name__}; "
                "use a pandas DataFrame or a pydantic model"
            )
        path = self.path(asset_key, partition, type(value))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol in _LOCAL_PROTOCOLS:
            # A private temporary name per writer, then an atomic replace: two runs writing
            # the same partition never see each other's half-written file.
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                             delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path.path)
        else:
            path.write_bytes(data)
        return path

    def exists(self, asset_key: dg.AssetKey, partition: str, kind: type) -> bool:
        return self.path(asset_key, partition, kind).exists()

    def read(self, asset_key: dg.AssetKey, partition: str, kind: type):
        data = self._bytes(asset_key, partition, kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate_json(data)
        return pd.read_parquet(io.BytesIO(data))

    def read_rows(self, asset_key: dg.AssetKey, partition: str, columns: list[str]
                  ) -> list[dict]:
        """A stored frame's `columns` as plain rows, without pandas: for readers of many
        partitions (the theme catalog reads every document's themes), ~3x faster."""
        data = self._bytes(asset_key, partition, pd.DataFrame)
        return pq.read_table(io.BytesIO(data), columns=columns).to_pylist()

    def _bytes(self, asset_key: dg.AssetKey, partition: str, kind: type) -> bytes:
        path = self.path(asset_key, partition, kind)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise dg.Failure(
                f"{asset_key.to_user_string()} partition {partition!r} has no stored value at "
                f"{path}: materialize it first"
            ) from exc


def _expected_type(context: dg.InputContext) -> type:
    """The annotated type of the input, or of the values of a `dict[str, T]` input."""
    typing_type = context.dagster_type.typing_type
    if typing.get_origin(typing_type) in (dict, collections.abc.Mapping):
        typing_type = typing.get_args(typing_type)[1]
    return typing_type


class DocgraphIOManager(dg.ConfigurableIOManager):
    store: AssetStore

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        keys = context.asset_partition_keys if context.has_asset_partitions else [UNPARTITIONED]
        if len(keys) == 1:
            by_partition = {keys[0]: obj}
        elif isinstance(obj, dict) and set(obj) == set(keys):
            by_partition = obj
        else:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()}: a step over {len(keys)} partitions must "
                "return a dict with one value per partition key"
            )
        paths = [self.store.write(context.asset_key, k, v) for k, v in by_partition.items()]
        if len(paths) == 1:
            context.add_output_metadata({"path": dg.MetadataValue.path(str(paths[0]))})

    def load_input(self, context: dg.InputContext) -> object:
        kind = _expected_type(context)
        keys = context.asset_partition_keys if context.has_asset_partitions else [UNPARTITIONED]
        values = {k: self.store.read(context.asset_key, k, kind) for k in keys}
        # A partitioned downstream reading its own partition gets the value; anything that
        # reads a set of partitions (e.g. an unpartitioned catalog) gets {key: value}.
        if len(keys) == 1 and (context.has_partition_key or keys[0] == UNPARTITIONED):
            return values[keys[0]]
        return values
