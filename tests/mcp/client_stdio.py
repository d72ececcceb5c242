"""A real MCP client (the `mcp` Python SDK) driving `tollgate mcp` over stdio.

Usage: client_stdio.py <tollgate> <config> <ledger> <cache-dir> <invoice-json> <bad-invoice-json>
Prints one JSON object describing what it saw; tests/it/mcp.rs asserts on it.
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

KEY = "tollgate/idempotencyKey"


def summary(result):
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "meta": result.meta,
        "text": result.content[0].text if result.content else None,
    }


async def main() -> None:
    tollgate, config, ledger, cache, invoice, bad_invoice = sys.argv[1:7]
    params = StdioServerParameters(
        command=tollgate,
        args=["--config", config, "--ledger", ledger, "--cache-dir", cache, "mcp"],
    )
    out = {}
    progress = []

    async def on_progress(value, total, message):
        progress.append(message)

    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.server_info.name
            tools = await session.list_tools()
            out["tools"] = {
                t.name: {
                    "schema": t.input_schema,
                    "annotations": t.annotations.model_dump(by_alias=True, exclude_none=True),
                }
                for t in tools.tools
            }
            out["hello"] = summary(await session.call_tool("hello", {"message": "MCP"}))
            args = json.loads(invoice)
            out["invoice_first"] = summary(
                await session.call_tool(
                    "invoice", args, meta={KEY: "call-1"}, progress_callback=on_progress
                )
            )
            out["invoice_repeat"] = summary(
                await session.call_tool("invoice", args, meta={KEY: "call-1"})
            )
            changed = dict(args, customer="Other AG")
            out["invoice_conflict"] = summary(
                await session.call_tool("invoice", changed, meta={KEY: "call-1"})
            )
            out["tool_error"] = summary(
                await session.call_tool("invoice", json.loads(bad_invoice))
            )
            out["denied"] = summary(
                await session.call_tool("hostile-net", {"url": "http://192.0.2.1/secret"})
            )
            with anyio.move_on_after(1.5) as scope:
                await session.call_tool("hostile-compute", {"attack": "infinite-loop"})
            out["cancelled"] = scope.cancelled_caught
            await anyio.sleep(0.5)
            out["after_cancel"] = summary(await session.call_tool("hello", {"message": "again"}))
    out["progress"] = progress
    print(json.dumps(out))


anyio.run(main)
