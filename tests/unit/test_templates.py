"""The runbook's four message templates are the defaults, word for word."""

from __future__ import annotations

import pytest

from tbs_emergency.domain.templates import DEFAULT_TEMPLATES, MessageContext, Template, render

pytestmark = pytest.mark.unit


def test_runbook_texts() -> None:
    ctx = MessageContext(incident_id="inc-1", severity="P0")
    assert render("immediate", ctx).body == (
        "P0 EMERGENCY: TBS deployment issue detected. Rollback initiated."
        " Response required immediately."
    )
    assert render("user", ctx).body == (
        "System maintenance in progress. Service will be restored within 15 minutes."
        " Your data is secure."
    )
    assert render("stakeholder", ctx).body == (
        "Emergency rollback executed successfully. System operational."
        " Full incident report within 24 hours."
    )
    assert render("post_resolution", ctx).body == (
        "System fully restored. All services operational. Thank you for your patience."
    )


def test_rendering_carries_incident_and_tolerates_unknown_fields() -> None:
    n = render("escalation", MessageContext(incident_id="inc-9", severity="P0", reason="blue down"))
    assert (
        n.incident_id == "inc-9" and "blue down" in n.body and n.extra["template"] == "escalation"
    )
    custom = {"x": Template("x", "s {nope}", "b {incident_id}", ("primary",), ("webhook",), "now")}
    m = render("x", MessageContext(incident_id="i"), custom)
    assert m.subject == "s {nope}" and m.body == "b i"
    assert set(DEFAULT_TEMPLATES) >= {"immediate", "user", "stakeholder", "post_resolution"}
