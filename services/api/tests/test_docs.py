"""The documentation page: Swagger UI over the served OpenAPI document, every file from the API
itself; and the document is valid OpenAPI 3.1."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from services.api.tests.support import Client


async def test_the_page_loads_swagger_ui_from_the_api_itself(client: Client) -> None:
    response = await client.get("/docs", headers={"Authorization": ""})
    assert response.status == 200
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    page = await response.text()
    assert "<script>" not in page  # no inline script: the policy allows only files
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    assert all(s.startswith("/docs/") for s in sources), sources  # nothing from a CDN
    for source in sources:
        asset = await client.get(source, headers={"Authorization": ""})
        assert asset.status == 200, source
        assert len(await asset.read()) > 0, source
    bundle = await client.get("/docs/swagger-ui-bundle.js")
    assert bundle.content_type == "text/javascript"
    assert "SwaggerUIBundle" in await bundle.text()
    init = await (await client.get("/docs/init.js")).text()
    assert '"/openapi.json"' in init


async def test_an_unknown_file_is_a_404_problem(client: Client) -> None:
    for name in ("swagger-editor.js", "..%2Fdocs.py", "LICENSE", "index.css"):
        response = await client.get(f"/docs/{name}")
        assert response.status == 404, name
        assert response.content_type == "application/problem+json", name


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on anything OpenAPI 3.1's schema or rules refuse
    broken = {**document, "paths": {"/x": {"get": {"responses": {"200": {}}}}}}
    try:
        validate(broken)
    except OpenAPIValidationError:
        pass
    else:
        raise AssertionError("the validator accepted a response without a description")
