// An MCP server (the upstream behind Envoy in tests/e2e/test_mcp.py), built with the official
// SDK, stateless Streamable HTTP at /mcp, knowing nothing of OAuth: the filter guards it.
// One tool, `whoami`, answers with the identity headers the filter forwarded. Every request it
// receives is recorded (method, path, whether it carried Authorization), for the test to check
// that refused requests never reached it: GET /_upstream/requests.
//   node server.mjs --port N      (prints "mcp server ready N"; binds 127.0.0.1 only)
import http from 'node:http';
import { parseArgs } from 'node:util';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

const { values: args } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
const seen = [];

function mcpServer() {
  const server = new McpServer({ name: 'filter-test-mcp', version: '1.0.0' });
  server.registerTool('whoami', { description: 'The identity the gateway vouched for' }, async (extra) => {
    const headers = extra.requestInfo?.headers ?? {};
    const identity = {
      subject: headers['x-auth-subject'] ?? null,
      client_id: headers['x-auth-client-id'] ?? null,
      roles: headers['x-auth-roles'] ?? null,
    };
    return { content: [{ type: 'text', text: JSON.stringify(identity) }] };
  });
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  if (req.url === '/_upstream/requests') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(seen));
    return;
  }
  seen.push({ method: req.method, path: req.url, authorization: req.headers.authorization !== undefined });
  if (req.url !== '/mcp') {
    res.writeHead(404).end();
    return;
  }
  // Stateless: a server and a transport per request, as the SDK's stateless example does.
  const server = mcpServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res);
  } catch (err) {
    if (!res.headersSent) res.writeHead(500).end(String(err.message));
  }
});

httpServer.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`mcp server ready ${httpServer.address().port}\n`);
});
process.on('SIGTERM', () => httpServer.close(() => process.exit(0)));
