"""The bounds a setting may take, declared once and shared by every model that holds it:
``Settings``, ``QueryLimits``, ``SandboxLimits`` and ``LLMSettings``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Seconds = Annotated[float, Field(gt=0, description="seconds")]
StepCount = Annotated[int, Field(ge=1, description="root-model steps")]
Count = Annotated[int, Field(ge=0)]
Tokens = Annotated[int, Field(ge=1, description="tokens")]
PerMinute = Annotated[float, Field(gt=0, description="a minute")]
Dollars = Annotated[float, Field(gt=0, description="USD")]
AtLeastOne = Annotated[int, Field(ge=1)]
Temperature = Annotated[float, Field(ge=0, le=2)]
MemoryMB = Annotated[int, Field(ge=64, description="MB")]
Cores = Annotated[float, Field(gt=0, le=64, description="CPU cores")]
PoolSize = Annotated[int, Field(ge=1, le=64, description="warm sandboxes")]
ContextTokens = Annotated[int, Field(ge=2048, description="tokens")]
SlotCount = Annotated[int, Field(ge=1, le=32, description="parallel requests")]
OutputChars = Annotated[int, Field(ge=200, description="characters")]
