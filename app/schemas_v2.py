"""The pydantic models of the Open Inference Protocol (v2) REST API, as API.md's v2 section uses it.

Field names follow KServe's `docs/predict-api/v2/required_api.md`; parameter values are strings,
numbers or booleans, as the protocol (and its gRPC form) allows.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

Parameter = StrictBool | StrictInt | StrictFloat | StrictStr
Parameters = dict[str, Parameter]
Dimension = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelNames(BaseModel):
    """KServe's `GET /v2/models`."""

    models: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a variable dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(
        description="The inputs a request may send; image models accept one of `image` or `pixels`")
    outputs: list[TensorMetadata]


class RequestInput(_Strict):
    name: str
    shape: list[Dimension] = Field(max_length=32)
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        None, description="Row-major elements, flat or nested as the shape; absent when the tensor "
        "comes as binary data (parameter `binary_data_size`)")


class RequestOutput(_Strict):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Strict):
    id: str | None = Field(None, description="Echoed in the response")
    model_name: str | None = Field(None, description="Sent by KServe's client; must match the path if given")
    model_version: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None

    @field_validator("id")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be text that UTF-8 can encode (it is echoed)") from None
        return value


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float] | list[str] | None = Field(
        None, description="FP32 scores, or BYTES top classes; absent when the output comes as binary data")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class V2Error(BaseModel):
    """The protocol's error body, on every `/v2` route."""

    error: str
