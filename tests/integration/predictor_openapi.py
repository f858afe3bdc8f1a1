"""Our OpenAPI description of the endpoints the predictor serves, for schemathesis.

The Open Inference Protocol's REST spec (KServe's `rest_predict_v2.yaml`) cannot be committed here
and no package we install ships it (the kserve wheel does not), so this is our own description of
the routes we serve, written after that spec: its schemas for server and model metadata, readiness,
inference requests and responses and errors (OpenAPI 3.0: a field given as null fails its type, as
in the spec), plus the v1 predict route. Path parameters are limited to the served model and
version and one of each that is not served, so the fuzzer reaches the body handling.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("error_response"), "a bad request"),
    "404": _json(_ref("error_response"), "no such model or version"),
    "413": _json(_ref("error_response"), "too large"),
}

SCHEMAS: dict[str, Any] = {
    "error_response": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "parameters": {"type": "object", "additionalProperties": True},
    "metadata_server_response": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "metadata_tensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "metadata_model_response": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("metadata_tensor")},
            "outputs": {"type": "array", "items": _ref("metadata_tensor")},
        },
    },
    "live_response": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "ready_response": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "model_ready_response": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "tensor_data": {"type": "array", "items": {}},
    "request_input": {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string"},
            "parameters": _ref("parameters"),
            "data": _ref("tensor_data"),
        },
    },
    "request_output": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _ref("parameters")},
    },
    "inference_request": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("parameters"),
            "inputs": {"type": "array", "items": _ref("request_input")},
            "outputs": {"type": "array", "items": _ref("request_output")},
        },
    },
    "response_output": {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "parameters": _ref("parameters"),
            "data": _ref("tensor_data"),
        },
    },
    "inference_response": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("parameters"),
            "outputs": {"type": "array", "items": _ref("response_output")},
        },
    },
    "predict_request": {"type": "object", "required": ["instances"], "properties": {"instances": {"type": "array"}}},
    "predict_response": {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": {"type": "number"}}},
    },
}


def spec(model: str, version: str) -> dict[str, Any]:
    """The description, with path parameters drawn from the served model and version and one other each."""
    name = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "enum": [model, "x"]}}
    ver = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [version, "9"]},
    }
    metadata = {"200": _json(_ref("metadata_model_response"), "model metadata"), "404": ERRORS["404"]}
    ready = {"200": _json(_ref("model_ready_response"), "ready"), "404": ERRORS["404"]}
    infer_body = {"required": True, "content": {JSON: {"schema": _ref("inference_request")}}}
    infer = {"200": _json(_ref("inference_response"), "the predictions"), **ERRORS}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Slipway predictor (Open Inference Protocol, REST)", "version": "1"},
        "paths": {
            "/v2": {"get": {"responses": {"200": _json(_ref("metadata_server_response"), "server metadata")}}},
            "/v2/health/live": {"get": {"responses": {"200": _json(_ref("live_response"), "live")}}},
            "/v2/health/ready": {"get": {"responses": {"200": _json(_ref("ready_response"), "ready")}}},
            "/v2/models/{model_name}": {"get": {"parameters": [name], "responses": metadata}},
            "/v2/models/{model_name}/versions/{model_version}": {
                "get": {"parameters": [name, ver], "responses": metadata}
            },
            "/v2/models/{model_name}/ready": {"get": {"parameters": [name], "responses": ready}},
            "/v2/models/{model_name}/versions/{model_version}/ready": {
                "get": {"parameters": [name, ver], "responses": ready}
            },
            "/v2/models/{model_name}/infer": {
                "post": {"parameters": [name], "requestBody": infer_body, "responses": infer}
            },
            "/v2/models/{model_name}/versions/{model_version}/infer": {
                "post": {"parameters": [name, ver], "requestBody": infer_body, "responses": infer}
            },
            "/v1/models/{model_name}:predict": {
                "post": {
                    "parameters": [name],
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("predict_request")}}},
                    "responses": {"200": _json(_ref("predict_response"), "the predictions"), **ERRORS},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
