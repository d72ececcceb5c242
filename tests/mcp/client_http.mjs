// A real MCP client (@modelcontextprotocol/sdk) driving `tollgate mcp --listen` over
// streamable HTTP. Usage: node client_http.mjs <url> <invoice-json> <bad-invoice-json>
// Prints one JSON object describing what it saw; tests/it/mcp.rs asserts on it.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, invoiceText, badInvoiceText] = process.argv.slice(2);
const KEY = 'tollgate/idempotencyKey';
const client = new Client({ name: 'tollgate-test', version: '0.0.1' });
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);

const summary = (r) => ({
  is_error: Boolean(r.isError),
  structured: r.structuredContent ?? null,
  meta: r._meta ?? null,
  text: r.content?.[0]?.text ?? null,
});
const out = { server: client.getServerVersion()?.name, progress: [] };
const { tools } = await client.listTools();
out.tools = Object.fromEntries(
  tools.map((t) => [t.name, { schema: t.inputSchema, annotations: t.annotations ?? {} }]),
);
out.hello = summary(await client.callTool({ name: 'hello', arguments: { message: 'MCP' } }));
const invoice = JSON.parse(invoiceText);
out.invoice_first = summary(
  await client.callTool(
    { name: 'invoice', arguments: invoice, _meta: { [KEY]: 'http-call-1' } },
    undefined,
    { onprogress: (p) => out.progress.push(p.message) },
  ),
);
out.invoice_repeat = summary(
  await client.callTool({ name: 'invoice', arguments: invoice, _meta: { [KEY]: 'http-call-1' } }),
);
out.invoice_conflict = summary(
  await client.callTool({
    name: 'invoice',
    arguments: { ...invoice, customer: 'Other AG' },
    _meta: { [KEY]: 'http-call-1' },
  }),
);
out.tool_error = summary(
  await client.callTool({ name: 'invoice', arguments: JSON.parse(badInvoiceText) }),
);
out.denied = summary(
  await client.callTool({ name: 'hostile-net', arguments: { url: 'http://192.0.2.1/secret' } }),
);
const abort = new AbortController();
setTimeout(() => abort.abort('the agent gave up'), 1500);
try {
  await client.callTool(
    { name: 'hostile-compute', arguments: { attack: 'infinite-loop' } },
    undefined,
    { signal: abort.signal },
  );
  out.cancelled = false;
} catch (e) {
  out.cancelled = true;
  out.cancel_error = String(e.message);
}
await new Promise((resolve) => setTimeout(resolve, 500));
out.after_cancel = summary(await client.callTool({ name: 'hello', arguments: { message: 'again' } }));
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
