"""What `shesha ask` prints under an answer (``shesha.ask_text``), shared by the full CLI
and the light remote path: here, the lines saying why a query did not simply succeed."""

from __future__ import annotations

from shesha.ask_text import ending_lines, error_lines


def test_a_success_has_no_ending_lines() -> None:
    assert ending_lines({"status": "success", "error": None}) == []


def test_an_error_is_its_message_then_its_hint() -> None:
    result = {"status": "error", "error": "The model refused.\nHint: set SHESHA_MODEL"}
    assert ending_lines(result) == [("error", "The model refused."), ("hint", "set SHESHA_MODEL")]


def test_an_error_without_words_still_says_the_query_failed() -> None:
    assert ending_lines({"status": "error", "error": None}) == [("error", "the query failed")]


def test_a_limit_says_what_stopped_it() -> None:
    said = ending_lines({"status": "max_iterations", "error": "2 steps, the most allowed"})
    assert said == [("stopped", "2 steps, the most allowed")]
    assert ending_lines({"status": "timeout", "error": None}) == [("stopped", "timeout")]


def test_an_error_text_without_a_hint_is_one_line() -> None:
    assert error_lines("No project 'x'.") == [("error", "No project 'x'.")]
