"""The API documentation the balancer serves: an OpenAPI document of its REST
API (/openapi.json), an AsyncAPI document of its WebSocket (/asyncapi.json),
both built from the Python data in this package, and a page that renders
them (/docs, files in balancer/static/docs/)."""
from __future__ import annotations

from .asyncapi import asyncapi_document
from .openapi import openapi_document
from .routes import (
                     ASSET_ROUTE,
                     ASSET_TYPES,
                     ASSETS,
                     DOCS_PATH,
                     PUBLIC_PATHS,
                     asyncapi_json,
                     docs_asset,
                     docs_page,
                     is_documentation,
                     openapi_json,
)
from .version import package_version

__all__ = ["ASSETS", "ASSET_ROUTE", "ASSET_TYPES", "DOCS_PATH", "PUBLIC_PATHS", "asyncapi_document",
           "asyncapi_json", "docs_asset", "docs_page", "is_documentation", "openapi_document", "openapi_json",
           "package_version"]
