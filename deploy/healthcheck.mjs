// The image's HEALTHCHECK (deploy/Dockerfile): asks the cell's liveness endpoint with node
// itself, as the slim image has no curl. It reads the address the way the cell does when it
// comes from the environment (CELLMESH_HOST, CELLMESH_PORT; defaults 127.0.0.1 and 7400), so
// set those, not listen.* in the config file, when the image's check should work.
const configuredHost = process.env.CELLMESH_HOST || '127.0.0.1';
const port = process.env.CELLMESH_PORT || '7400';
// A wildcard listen address is reached on loopback; an IPv6 address goes in brackets.
const host = configuredHost === '0.0.0.0' ? '127.0.0.1' : configuredHost === '::' ? '[::1]' : configuredHost.includes(':') ? `[${configuredHost}]` : configuredHost; // real-net-ok: a wildcard listener is asked on loopback

try {
  const response = await fetch(`http://${host}:${port}/v1/healthz`, { signal: AbortSignal.timeout(4_000) });
  process.exit(response.status === 200 ? 0 : 1);
} catch (error) {
  process.stderr.write(`cellmesh health check: http://${host}:${port}/v1/healthz: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
