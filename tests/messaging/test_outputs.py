"""Tests for kernel_nursery.messaging._outputs: typed outputs from messages, even sloppy ones."""

from __future__ import annotations

from typing import Any

import pytest

from kernel_nursery import ExecuteResult
from kernel_nursery.messaging import (
    ClearOutput,
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    StreamOutput,
    UpdateDisplayDataOutput,
)
from kernel_nursery.messaging._outputs import typed_output
from kernel_nursery.wire import Session

SESSION = Session(key="k")


def out(msg_type: str, content: dict[str, Any]) -> Any:
    """The typed output of a *msg_type* message with *content*."""
    return typed_output(SESSION.new_message(msg_type, content))


def test_each_output_type_is_typed_with_its_fields() -> None:
    """Every output message type maps to its class, fields filled from the content."""
    stream = out("stream", {"name": "stderr", "text": "x"})
    assert isinstance(stream, StreamOutput) and (stream.name, stream.text) == ("stderr", "x")
    result = out("execute_result", {"execution_count": 3, "data": {"text/plain": "1"}})
    assert isinstance(result, ExecuteResultOutput) and result.execution_count == 3
    assert result.data == {"text/plain": "1"} and result.metadata == {}
    display = out("display_data", {"data": {"a": 1}, "transient": {"display_id": "d"}})
    assert isinstance(display, DisplayDataOutput) and display.transient == {"display_id": "d"}
    assert isinstance(out("update_display_data", {}), UpdateDisplayDataOutput)
    error = out("error", {"ename": "E", "evalue": "v", "traceback": ["a", "b"]})
    assert isinstance(error, ErrorOutput) and error.traceback == ["a", "b"]
    clear = out("clear_output", {"wait": True})
    assert isinstance(clear, ClearOutput) and clear.wait


SLOPPY = {
    "stream": ({}, {"name": "", "text": ""}),
    "execute_result": (
        {"execution_count": "1", "data": None},
        {"execution_count": None, "data": {}, "metadata": {}},
    ),
    "display_data": ({"data": [1], "metadata": "m"}, {"data": {}, "metadata": {}, "transient": {}}),
    "error": ({"traceback": "not a list"}, {"ename": "", "evalue": "", "traceback": []}),
    "clear_output": ({}, {"wait": False}),
}


@pytest.mark.parametrize(("msg_type", "content", "fields"), [(k, *v) for k, v in SLOPPY.items()])
def test_missing_or_ill_typed_fields_take_empty_values(
    msg_type: str, content: dict[str, Any], fields: dict[str, Any]
) -> None:
    """A kernel that leaves fields out or sends the wrong types breaks no consumer: each field
    takes an empty value of its type."""
    typed = out(msg_type, content)
    assert {name: getattr(typed, name) for name in fields} == fields


def test_a_message_that_is_no_output_is_refused() -> None:
    """typed_output of a status message is a ValueError naming the type."""
    with pytest.raises(ValueError, match="'status' is not an output"):
        out("status", {"execution_state": "idle"})


def test_execute_result_types_its_outputs() -> None:
    """ExecuteResult.typed_outputs gives the collected outputs in their typed form."""
    reply = SESSION.new_message("execute_reply", {"status": "ok", "execution_count": 1})
    printed = SESSION.new_message("stream", {"name": "stdout", "text": "hi\n"})
    result = ExecuteResult(reply=reply, outputs=[printed])
    assert result.typed_outputs == [StreamOutput(name="stdout", text="hi\n", message=printed)]
    assert result.stdout == "hi\n" and result.execution_count == 1


def test_a_results_error_has_the_shape_of_the_streamed_error() -> None:
    """ExecuteResult.error is an ErrorOutput read from the reply (.ename...), which still
    reads as the mapping it used to be (["ename"], dict(), .get); None when the code ran."""
    content = {"status": "error", "ename": "E", "evalue": "v", "traceback": ["a"]}
    error = ExecuteResult(reply=SESSION.new_message("execute_reply", content)).error
    assert isinstance(error, ErrorOutput)
    assert (error.ename, error.evalue, error.traceback) == ("E", "v", ["a"])
    assert error["ename"] == "E" and error.get("evalue") == "v" and "traceback" in error
    assert dict(error) == {"ename": "E", "evalue": "v", "traceback": ["a"]}
    with pytest.raises(KeyError):
        error["message"]
    streamed = out("error", {"ename": "E", "evalue": "v", "traceback": ["a"]})
    assert dict(streamed) == dict(error)
    assert ExecuteResult(reply=SESSION.new_message("execute_reply", {"status": "ok"})).error is None
