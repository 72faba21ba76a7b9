"""One error vocabulary: `ErrorClass` (resources/errors.py) is every error class docgraph
reports, the README's table lists exactly its members, production code names error
classes only through it, and what reaches Dagster's metadata is plain words."""

import ast
import importlib
import re
from pathlib import Path

import dagster as dg
import pytest

from assets.failures import PartitionError, raise_failures
from pipeline_defs.run_launch import Interrupted
from pipeline_defs.slot_wait import SlotWaitTimeout
from resources.errors import DocgraphError, ErrorClass
from resources.llm.calls import FormatRejected
from resources.neo4j import InvalidContribution, SchemaMismatch

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("assets", "pipeline_defs", "resources")
SOURCES = {f.relative_to(ROOT).as_posix(): ast.parse(f.read_text(), str(f))
           for package in PRODUCT for f in sorted((ROOT / package).rglob("*.py"))}
# The CLI's stage states (pipeline_defs/outcomes.py STAGE_STATES) are another vocabulary
# that happens to share one word with this one.
STAGE_STATE_FILES = {"pipeline_defs/outcomes.py", "pipeline_defs/report.py"}


def readme_table() -> list[str]:
    """The error classes in the first column of the README's error-class table."""
    section = (ROOT / "README.md").read_text().split("\n## Documents and failures\n")[1]
    section = section.split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert section.count("| error_class |") == 1 and rows
    return [name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])]


def test_the_readme_table_lists_every_error_class_once():
    listed = readme_table()
    assert sorted(listed) == sorted(ErrorClass)
    assert len(listed) == len(set(listed))


def test_every_error_class_says_what_it_means_where_it_is_defined():
    source = (ROOT / "resources/errors.py").read_text()
    for member in ErrorClass:
        [line] = [ln for ln in source.splitlines() if f'= "{member.value}"' in ln]
        assert "#" in line, f"{member.name} has no comment saying what it means"


def _error_class_parameters() -> dict[str, set[int]]:
    """{callable name: positions of its `error_class` argument}, for every function,
    method and dataclass of the product that takes one."""
    positions: dict[str, set[int]] = {}
    for tree in SOURCES.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                names = [a.arg for a in node.args.args]
                if "error_class" in names:
                    name = node.name
                    if name == "__init__":  # called by its class's name, without self
                        owner = next(c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                                     and node in c.body)
                        name, names = owner.name, names[1:]
                    elif names[0] == "self":
                        names = names[1:]
                    positions.setdefault(name, set()).add(names.index("error_class"))
            elif isinstance(node, ast.ClassDef) and any(
                    isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dataclass"
                    for d in node.decorator_list):
                fields = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)]
                if "error_class" in fields:
                    positions.setdefault(node.name, set()).add(fields.index("error_class"))
    # a class without its own __init__ is called like its base (ItemFailed, DocgraphError)
    classes = [node for tree in SOURCES.values() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef)]
    for _ in range(len(classes)):
        for node in classes:
            inherited = {p for b in node.bases for p in positions.get(getattr(b, "id", ""), ())}
            if inherited and node.name not in positions and not any(
                    isinstance(f, ast.FunctionDef) and f.name == "__init__" for f in node.body):
                positions[node.name] = inherited
    return positions


def _words(node: ast.AST) -> list[ast.Constant]:
    """String constants in `node` (a constant, or a tuple/list/set of them)."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [i for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]


def _names_error_class(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id.endswith("error_class")
            or isinstance(node, ast.Attribute) and node.attr.endswith("error_class"))


def test_production_code_names_error_classes_only_through_the_enum():
    """No string where an error class goes: as an `error_class` argument, the value of an
    "error_class" key, compared with an error class, or returned as one; and no string
    that spells a member anywhere else (the CLI's stage states aside)."""
    positions = _error_class_parameters()
    assert {"PartitionError", "IngestError", "ItemFailed", "StageOutcome"} <= set(positions)
    values = set(ErrorClass)
    found = []
    for path, tree in SOURCES.items():
        if path == "resources/errors.py":
            continue
        for node in ast.walk(tree):
            suspects: list[ast.Constant] = []
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                for position in positions.get(called, ()):
                    if position < len(node.args):
                        suspects += _words(node.args[position])
                suspects += [w for k in node.keywords if k.arg == "error_class"
                             for w in _words(k.value)]
            elif isinstance(node, ast.Dict):
                suspects += [w for k, v in zip(node.keys, node.values, strict=True)
                             if isinstance(k, ast.Constant) and k.value == "error_class"
                             for w in _words(v)]
            elif isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_names_error_class(side) for side in sides):
                    suspects += [w for side in sides for w in _words(side)]
            elif isinstance(node, ast.FunctionDef) and getattr(node.returns, "id", "") == \
                    "ErrorClass":
                suspects += [w for r in ast.walk(node) if isinstance(r, ast.Return) and r.value
                             for w in _words(r.value)]
            elif (isinstance(node, ast.Constant) and node.value in values
                  and not (path in STAGE_STATE_FILES and node.value == "gate_failed")):
                suspects.append(node)
            found += [f"{path}:{w.lineno}: {w.value!r}" for w in suspects]
    assert sorted(set(found)) == []


def test_every_error_class_named_in_the_code_is_a_member():
    named = {(path, node.attr) for path, tree in SOURCES.items() for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "ErrorClass"}
    assert len(named) > 30  # the walk found them
    assert {(p, n) for p, n in named if n not in ErrorClass.__members__} == set()


def test_every_exception_of_the_product_derives_from_docgraph_error():
    """Interrupted aside: a signal to stop, not an error (a BaseException)."""
    modules = [importlib.import_module(path.removesuffix(".py").removesuffix("/__init__")
                                       .replace("/", ".")) for path in SOURCES]
    defined = {value for module in modules for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, BaseException)
               and value.__module__ == module.__name__}
    assert {e.__name__ for e in defined} >= {"IngestError", "PartitionError", "ItemFailed",
                                             "SchemaMismatch", "SlotWaitTimeout"}
    assert {e for e in defined if not issubclass(e, DocgraphError)} == {Interrupted}
    assert not issubclass(Interrupted, Exception)


@pytest.mark.parametrize(("error", "error_class", "also"), [
    (SchemaMismatch("the index has 8 dimensions"), ErrorClass.SCHEMA_MISMATCH, RuntimeError),
    (InvalidContribution("unknown entity"), ErrorClass.GRAPH_WRITE_FAILED, ValueError),
    (SlotWaitTimeout("gave up"), ErrorClass.SLOT_WAIT_TIMEOUT, Exception),
    (FormatRejected("client_error: json_schema"), ErrorClass.CLIENT_ERROR, Exception),
])
def test_exceptions_carry_their_class_and_keep_their_old_bases(error, error_class, also):
    assert isinstance(error, DocgraphError) and isinstance(error, also)
    assert error.error_class is error_class
    assert str(error) == error.args[0]


def test_a_failure_reaches_dagster_as_plain_words():
    """Dagster serialises only enums it knows: the step's Failure metadata (and what the
    CLI summary reads back) must hold the words, not ErrorClass members."""
    failures = [PartitionError("a", "docs/a.md", ErrorClass.EMPTY, "the file is empty"),
                PartitionError("b", "docs/b.md", ErrorClass.VANISHED, "gone")]
    for batch in (failures[:1], failures):
        with pytest.raises(dg.Failure) as raised:
            raise_failures(batch, attempted=3)
        metadata = raised.value.metadata
        dg.serialize_value(dg.AssetMaterialization("probe", metadata=metadata))
        assert [f["error_class"] for f in metadata["failures"].value] == \
            [f.error_class.value for f in batch]
        assert all(type(f["error_class"]) is str for f in metadata["failures"].value)
