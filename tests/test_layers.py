"""The package layers, read from every module's imports (function-level imports included):
arrows point down only. core is the floor (standard library only); filters, mixers and training
never import Spark, Prefect, pipelines or flows; pipelines never imports flows. Model-based
scorers in filters use training's model definition (training/model.py), so filters may import
training, and training never imports filters. synth (rephrasing: prompts, LLM backends, cache)
sits beside filters and imports none of the other packages but core."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "filters", "mixers", "training", "synth", "pipelines", "flows")
FORBIDDEN = {
    "filters": {"pyspark", "prefect", "pipelines", "flows"},
    "mixers": {"pyspark", "prefect", "pipelines", "flows", "training", "filters"},
    "training": {"pyspark", "prefect", "pipelines", "flows", "filters"},
    "synth": {"pyspark", "prefect", "pipelines", "flows", "filters", "mixers", "training"},
    "pipelines": {"prefect", "flows"},
}


def imports_of(path: Path, package: str) -> set[str]:
    """Top-level names of every module `path` imports (relative imports resolve to its package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def test_no_arrow_points_up():
    wrong = []
    for package, banned in FORBIDDEN.items():
        for path in modules(package):
            for name in sorted(imports_of(path, package) & banned):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_core_imports_only_the_standard_library():
    wrong = []
    for path in modules("core"):
        for name in imports_of(path, "core") - {"core", "__future__"}:
            if name not in sys.stdlib_module_names:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_arrow(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from pyspark.sql import functions\n    from . import x\n")
    assert imports_of(bad, "filters") == {"pyspark", "filters"}
