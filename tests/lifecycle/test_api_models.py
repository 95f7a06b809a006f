"""The typed request bodies say what is wrong, naming the field, as the hand checks they replaced did."""

from __future__ import annotations

import pytest

from openbwv.server import api_models as m
from openbwv.server import sar_export
from openbwv.server.errors import BadRequest


def refusal(model, doc) -> str:
    with pytest.raises(BadRequest) as caught:
        m.parse(model, doc)
    return caught.value.reason


@pytest.mark.parametrize("model, doc, says", [
    (m.LoginBody, {}, "username is required; password is required"),
    (m.LoginBody, {"username": 5, "password": "x"}, "username must be a string"),
    (m.MarkBody, {"case_ref": "   ", "reason": "r"}, "case_ref is required"),
    (m.MarkBody, {"case_ref": "c" * 101, "reason": "r"}, "case_ref is 101 characters; at most 100"),
    (m.ExtendBody, {"months": 3, "reason": "busy"}, "months must be 1 or 2"),
    (m.ChangeUserBody, {"disabled": "yes"}, "disabled must be true or false"),
    (m.HoldBody, {"clips": []}, "clips must have at least 1 item(s)"),
    (m.HoldBody, {"clips": ["not-a-clip"]}, "clips[0] 'not-a-clip' is not a clip id"),
    (m.AssignBody, {"officer": "pc-1", "from": "2025-11-25T10:00:00"}, "from '2025-11-25T10:00:00' has no time zone"),
    (m.LogRequestBody, {"requester": "A", "description": "d", "from": "2025-11-25T10:00Z", "to": "2025-11-25T11:00Z",
                        "received": "yesterday"}, "received 'yesterday' is not a date (YYYY-MM-DD)"),
    (m.LogRequestBody, {"requester": "A", "description": "d", "from": "2025-11-25T10:00Z", "to": "2025-11-25T11:00Z",
                        "lat": float("nan")}, "lat must be a finite number"),
    (m.AddUserBody, {"username": "Eve", "role": "king", "password": "short"},
     "username 'Eve' is not 2-64 of a-z"),
])
def test_a_bad_body_is_refused_with_the_field_and_what_is_wrong(model, doc, says):
    assert says in refusal(model, doc)


def test_a_body_that_is_not_an_object_is_refused_as_such():
    assert refusal(m.CloseBody, ["outcome"]) == "request body must be a JSON object"


def test_text_is_trimmed_and_unknown_fields_are_ignored():
    given = m.parse(m.MarkBody, {"case_ref": "  CR-1 ", "reason": "seen", "colour": "blue"})
    assert (given.case_ref, given.reason) == ("CR-1", "seen")


def test_the_export_body_and_the_export_plan_agree_on_how_many_clips():
    assert m.MAX_EXPORT_CLIPS == sar_export.MAX_CLIPS
