"""Fast JSON responses: orjson for plain data, pydantic's own serialiser for the typed answers."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.model_dump_json().encode()
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
