"""Collection, alias and payload-index endpoints. What each does is in
``qcluster.api.actions``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qcluster.api import actions
from qcluster.api.rest._request import run_storage, run_with_body, timeout_param, write_params
from qcluster.api.rest._route import Route
from qcluster.api.schema.parse import check_collection_name

__all__ = ["ROUTES"]

_WRITE_QUERY = ("wait", "ordering", "timeout")


def _name(request: web.Request, key: str = "collection_name") -> str:
    return check_collection_name(request.match_info[key])


async def list_collections(request: web.Request) -> Any:
    return await run_storage(request, actions.list_collections)


async def create_collection(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_with_body(request, actions.create_collection, name=name)


async def get_collection(request: web.Request) -> Any:
    return await run_storage(request, actions.collection_info, name=_name(request))


async def collection_exists(request: web.Request) -> Any:
    return await run_storage(request, actions.collection_exists, name=_name(request))


async def update_collection(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_with_body(request, actions.update_collection, name=name)


async def delete_collection(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_storage(request, actions.delete_collection, name=name)


async def update_aliases(request: web.Request) -> Any:
    timeout_param(request)
    return await run_with_body(request, actions.update_aliases)


async def collection_aliases(request: web.Request) -> Any:
    return await run_storage(request, actions.collection_aliases, name=_name(request))


async def all_aliases(request: web.Request) -> Any:
    return await run_storage(request, actions.collection_aliases, name=None)


async def create_index(request: web.Request) -> Any:
    name = _name(request)
    params = write_params(request)
    return await run_with_body(request, actions.create_index, name=name, wait=params.wait)


async def delete_index(request: web.Request) -> Any:
    name = _name(request)
    params = write_params(request)
    return await run_storage(request, actions.delete_index, name=name, field_name=request.match_info["field_name"],
                             wait=params.wait)


_C = "/collections/{collection_name}"

ROUTES = (
    Route("GET", "/collections", list_collections, "get_collections", "List collections",
          result_schema="CollectionsResponse"),
    # Registered before {collection_name} routes so "aliases" is not taken for a name.
    Route("POST", "/collections/aliases", update_aliases, "update_aliases", "Create, delete or rename aliases",
          request_schema="ChangeAliasesOperation", result_schema="Bool", query_params=("timeout",)),
    Route("GET", "/aliases", all_aliases, "get_collections_aliases", "List every alias",
          result_schema="CollectionsAliasesResponse"),
    Route("GET", _C, get_collection, "get_collection", "Collection info", result_schema="CollectionInfo"),
    Route("PUT", _C, create_collection, "create_collection", "Create a collection",
          request_schema="CreateCollection", result_schema="Bool", query_params=("timeout",)),
    Route("PATCH", _C, update_collection, "update_collection", "Update collection parameters",
          request_schema="UpdateCollection", result_schema="Bool", query_params=("timeout",)),
    Route("DELETE", _C, delete_collection, "delete_collection", "Delete a collection",
          result_schema="Bool", query_params=("timeout",)),
    Route("GET", f"{_C}/exists", collection_exists, "collection_exists", "Whether a collection exists",
          result_schema="CollectionExistence"),
    Route("GET", f"{_C}/aliases", collection_aliases, "get_collection_aliases", "Aliases of a collection",
          result_schema="CollectionsAliasesResponse"),
    Route("PUT", f"{_C}/index", create_index, "create_field_index", "Create a payload index",
          request_schema="CreateFieldIndex", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("DELETE", f"{_C}/index/{{field_name}}", delete_index, "delete_field_index", "Delete a payload index",
          result_schema="UpdateResult", query_params=_WRITE_QUERY),
)
