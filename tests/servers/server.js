// SPDX-License-Identifier: Apache-2.0
// tests/servers/server.js - a plain Node.js https server for node.sh:
// P11T_NODE_PORT=PORT node --openssl-shared-config server.js CERT KEY [...]
// Nothing here knows about p11ticket: with --openssl-shared-config, Node 18
// reads the openssl_conf section of OPENSSL_CONF, which loads the provider.
//
// The port comes from the environment, not argv: Node's default
// sessionIdContext (the TLS session id context, which a ticket carries and
// a server must share to resume it) is a hash of process.argv, so two
// servers resume each other's tickets only if their command lines match.
'use strict';
const fs = require('fs');
const https = require('https');

const [cert, key] = process.argv.slice(2);
const port = process.env.P11T_NODE_PORT;
const options = {
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
};
// Node's own ticket-key option (48 bytes), when node.sh asks for it.
if (process.env.P11T_NODE_TICKET_KEYS) {
  options.ticketKeys = fs.readFileSync(process.env.P11T_NODE_TICKET_KEYS);
}
const server = https.createServer(options, (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok\n');
});
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`LISTEN 127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
