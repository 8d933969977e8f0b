// An MCP client (the official SDK's Client and Streamable HTTP transport) for
// tests/e2e/test_mcp.py. With --client-id and --client-secret it uses the SDK's own
// client-credentials auth provider: on the server's 401 it reads the WWW-Authenticate
// challenge, fetches the RFC 9728 metadata, discovers the issuer, gets a token, and retries.
// With --token it sends that token as it is; with neither, no token. It then lists the tools
// and calls `whoami`. Prints one JSON line: {"tools": [...], "whoami": {...}} or {"error": "..."}.
//   node client.mjs --url http://127.0.0.1:PORT/mcp [--issuer URL --client-id ID --client-secret S] [--token T]
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    token: { type: 'string' },
  },
});

const options = {};
if (args['client-id']) {
  options.authProvider = new ClientCredentialsProvider({
    clientId: args['client-id'],
    clientSecret: args['client-secret'],
    expectedIssuer: args.issuer,
  });
}
if (args.token) options.requestInit = { headers: { authorization: `Bearer ${args.token}` } };

const client = new Client({ name: 'filter-test-client', version: '1.0.0' });
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(args.url), options));
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  const whoami = JSON.parse(result.content[0].text);
  process.stdout.write(`${JSON.stringify({ tools: tools.map((tool) => tool.name), whoami })}\n`);
  await client.close();
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: String(err?.message ?? err) })}\n`);
  process.exitCode = 1;
}
