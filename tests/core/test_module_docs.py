"""Every module folder carries a README in OpenSIPS's outline whose
reference tables are the ones its exports give (docgen keeps them true)."""
from pathlib import Path

import pytest

from opensipy import docgen

MODULES = Path(__file__).resolve().parents[2] / "modules"
FOLDERS = sorted(p for p in MODULES.iterdir()
                 if (p / "__init__.py").is_file())


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_module_readme_has_the_outline_and_current_tables(folder):
    readme = folder / "README.md"
    assert readme.is_file(), f"{folder.name} has no README.md"
    text = readme.read_text()
    assert text.startswith(f"# {folder.name} Module")
    for heading in ("## Overview", "## Dependencies"):
        assert heading in text, f"{folder.name}: missing {heading}"
    assert docgen.block_for(folder.name) in text, (
        f"{folder.name}/README.md is stale: run "
        f"python3 -m opensipy.docgen modules/{folder.name}")


def test_docgen_notices_a_stale_table(tmp_path):
    d = tmp_path / "example"
    d.mkdir()
    (d / "README.md").write_text(
        "# example Module\n\n" + docgen.BEGIN + "\nold\n" + docgen.END + "\n")
    assert docgen.update_readme(d) is True
    assert "`proc_no`" in (d / "README.md").read_text()
    assert docgen.update_readme(d) is False
