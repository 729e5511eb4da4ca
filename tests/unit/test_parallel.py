from __future__ import annotations

from tests.parallel import NO_TESTS_COLLECTED, combined_status


def test_a_failure_on_either_side_fails_make_test() -> None:
    assert combined_status([0, 1]) == 1
    assert combined_status([1, 0]) == 1
    assert combined_status([0, 0]) == 0


def test_a_side_that_selected_nothing_does_not_count() -> None:
    assert combined_status([0, NO_TESTS_COLLECTED]) == 0
    assert combined_status([NO_TESTS_COLLECTED, 1]) == 1
    assert combined_status([NO_TESTS_COLLECTED, NO_TESTS_COLLECTED]) == NO_TESTS_COLLECTED
