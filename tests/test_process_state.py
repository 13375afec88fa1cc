"""The suite's own guard: a test that leaves process-wide state changed fails, by name, and the
state is set back for the tests after it (tests/process_state.py)."""
import os

import pytest
import torch  # noqa: F401 -- used by the LEAKS statements

from process_state import ProcessState

TESTS = os.path.dirname(os.path.abspath(__file__))

LEAKS = {
    "threads": "torch.set_num_threads(torch.get_num_threads() + 1)",
    "dtype": "torch.set_default_dtype(torch.float64)",
    "grad": "torch.set_grad_enabled(False)",
    "environment": "os.environ['ECHO_LEAKED_BY_TEST'] = '1'",
    "deterministic": "torch.use_deterministic_algorithms(True)",
    "cwd": "os.chdir(os.path.dirname(os.getcwd()))",
}


@pytest.mark.parametrize("what", sorted(LEAKS))
def test_each_setting_is_seen_and_restored(what):
    before = ProcessState.take()
    exec(LEAKS[what])
    now = ProcessState.take()
    changes = before.changes(now)
    before.restore(now)
    assert len(changes) == 1, changes
    assert ProcessState.take() == before


def test_conftest_installs_the_check(request):
    import conftest
    import process_state
    assert "process_state_unchanged" in request.fixturenames  # autouse: every test gets it
    assert conftest.process_state_unchanged is process_state.process_state_unchanged
    assert process_state._expected[0].num_threads == int(os.environ.get("ECHO_TEST_THREADS", "1"))


def test_the_leaking_test_fails_by_name_and_the_next_one_runs_clean(pytester, monkeypatch):
    """In a fresh process, as under xdist: a leaking test errors at teardown and names what it
    changed, and the test after it sees the state set back."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")])))
    pytester.makeconftest("""
        import torch
        torch.set_num_threads(1)
        from process_state import expect_current, process_state_unchanged  # noqa: F401
        expect_current()
    """)
    pytester.makepyfile(test_inner="""
        import os
        import torch

        def test_leaks_threads_and_environment():
            torch.set_num_threads(2)
            os.environ["ECHO_LEAKED_BY_TEST"] = "1"

        def test_after_it(monkeypatch):
            monkeypatch.setenv("ECHO_SET_AND_UNDONE", "1")  # undone by its fixture: no leak
            assert torch.get_num_threads() == 1 and "ECHO_LEAKED_BY_TEST" not in os.environ
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0", timeout=120)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_leaks_threads_and_environment left process-wide state changed*"
                                 "num_threads 1 -> 2; $ECHO_LEAKED_BY_TEST '<unset>' -> '1'"])
