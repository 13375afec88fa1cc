"""tools/mutant_list.py stays in step with the code: every mutant still finds its text, once, and
names tests that exist (the mutation run itself is `make mutants`, not part of this suite)."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
from mutant_list import MUTANTS  # noqa: E402
from mutants import ListRotted, check_applies  # noqa: E402


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_still_applies_and_names_existing_tests(mutant):
    check_applies(mutant)
    assert mutant.new != mutant.old
    files = [arg for arg in mutant.tests if arg.startswith("tests/")]
    assert files and all((REPO / f).is_file() for f in files), mutant.tests


def test_names_are_unique():
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)


def test_a_mutant_whose_text_is_gone_is_refused(tmp_path):
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "remix.py").write_text("nothing of the original here\n")
    with pytest.raises(ListRotted, match="occurs 0 times"):
        check_applies(MUTANTS[0]._replace(path="echo/remix.py"), tmp_path)
