"""The base of every config section: unknown keys are errors, and values are validated
when given, when defaulted and when assigned later."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config section (pydantic model) that forbids unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)
