"""Typed answers: the answer a query must give, as a pydantic model or a JSON schema.

The model gives the answer through ``FINAL(value)`` with a dict (or JSON text); the value
is checked before the query ends, and a value that fails goes back to the model with
what is wrong, within the iteration budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from shesha.errors import ConfigError

Output = type[BaseModel] | dict[str, Any]
"""What a query may ask for: a pydantic model (the result is an instance) or a JSON schema
(the result is the JSON data)."""


def parse_json(answer: str) -> Any:
    try:
        return json.loads(answer)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"the answer is not JSON ({e.msg} at character {e.pos}); give a dict to FINAL"
        ) from e


def output_checker(output: Output) -> tuple[dict[str, Any], Callable[[str], Any]]:
    """The JSON schema for the prompt, and the function that checks an answer."""
    if isinstance(output, type) and issubclass(output, BaseModel):
        model = output

        def check_model(answer: str) -> Any:
            try:
                return model.model_validate(parse_json(answer))
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'the value'}: {err['msg']}"
                    for err in e.errors()[:5]
                )
                raise ValueError(problems) from e

        return model.model_json_schema(), check_model
    if not isinstance(output, dict):
        raise ConfigError(
            f"output= takes a pydantic model class or a JSON schema (a dict), not {output!r}."
        )
    try:
        validator_class = jsonschema.validators.validator_for(output)
        validator_class.check_schema(output)
    except jsonschema.SchemaError as e:
        raise ConfigError(f"The output schema is not a valid JSON schema: {e.message}") from e
    validator = validator_class(output)

    def check_schema(answer: str) -> Any:
        data = parse_json(answer)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
        if errors:
            raise ValueError(
                "; ".join(
                    f"{'.'.join(str(p) for p in e.path) or 'the value'}: {e.message}"
                    for e in errors[:5]
                )
            )
        return data

    return output, check_schema
