"""Collection, alias and payload-index endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from qcluster.api.rest._parse import check_collection_name, loads_object
from qcluster.api.rest._parse_collection import (
    parse_alias_actions,
    parse_create_collection,
    parse_create_index,
    parse_update_collection,
)
from qcluster.api.rest._render import render_collection_info, render_update_result
from qcluster.api.rest._request import read_body, run_storage, timeout_param, write_params
from qcluster.api.rest._route import Route
from qcluster.operations import DeleteFieldIndex

if TYPE_CHECKING:
    from qcluster.storage.toc import TableOfContents

__all__ = ["ROUTES"]

_WRITE_QUERY = ("wait", "ordering", "timeout")


def _name(request: web.Request, key: str = "collection_name") -> str:
    return check_collection_name(request.match_info[key])


def _list_sync(toc: TableOfContents) -> dict[str, Any]:
    return {"collections": [{"name": name} for name in sorted(toc.collection_names())]}


async def list_collections(request: web.Request) -> Any:
    return await run_storage(request, _list_sync)


def _create_sync(toc: TableOfContents, *, name: str, body: bytes) -> bool:
    toc.create_collection(name, parse_create_collection(loads_object(body)))
    return True


async def create_collection(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_storage(request, _create_sync, name=name, body=await read_body(request))


def _info_sync(toc: TableOfContents, *, name: str) -> dict[str, Any]:
    collection = toc.collection(name)
    return render_collection_info(collection.info(), config=collection.config,
                                  created_at=getattr(collection, "created_at", None))


async def get_collection(request: web.Request) -> Any:
    return await run_storage(request, _info_sync, name=_name(request))


def _exists_sync(toc: TableOfContents, *, name: str) -> dict[str, bool]:
    return {"exists": toc.exists(name)}


async def collection_exists(request: web.Request) -> Any:
    return await run_storage(request, _exists_sync, name=_name(request))


def _update_sync(toc: TableOfContents, *, name: str, body: bytes) -> bool:
    toc.update_collection(name, parse_update_collection(loads_object(body)))
    return True


async def update_collection(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_storage(request, _update_sync, name=name, body=await read_body(request))


def _delete_sync(toc: TableOfContents, *, name: str) -> bool:
    return toc.delete_collection(name)


async def delete_collection(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_storage(request, _delete_sync, name=name)


def _update_aliases_sync(toc: TableOfContents, *, body: bytes) -> bool:
    toc.update_aliases(parse_alias_actions(loads_object(body)))
    return True


async def update_aliases(request: web.Request) -> Any:
    timeout_param(request)
    return await run_storage(request, _update_aliases_sync, body=await read_body(request))


def _aliases_sync(toc: TableOfContents, *, name: str | None) -> dict[str, Any]:
    pairs = toc.aliases(name)
    return {"aliases": [{"alias_name": alias, "collection_name": collection} for alias, collection in pairs]}


async def collection_aliases(request: web.Request) -> Any:
    return await run_storage(request, _aliases_sync, name=_name(request))


async def all_aliases(request: web.Request) -> Any:
    return await run_storage(request, _aliases_sync, name=None)


def _create_index_sync(toc: TableOfContents, *, name: str, body: bytes, wait: bool) -> dict[str, Any]:
    operation = parse_create_index(loads_object(body))
    return render_update_result(toc.collection(name).update(operation, wait=wait))


async def create_index(request: web.Request) -> Any:
    name = _name(request)
    params = write_params(request)
    return await run_storage(request, _create_index_sync, name=name, body=await read_body(request), wait=params.wait)


def _delete_index_sync(toc: TableOfContents, *, name: str, field_name: str, wait: bool) -> dict[str, Any]:
    return render_update_result(toc.collection(name).update(DeleteFieldIndex(field_name=field_name), wait=wait))


async def delete_index(request: web.Request) -> Any:
    name = _name(request)
    params = write_params(request)
    return await run_storage(request, _delete_index_sync, name=name, field_name=request.match_info["field_name"],
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
