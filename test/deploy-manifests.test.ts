/**
 * deploy/: the Dockerfile, the compose file and the Kubernetes manifests. No container engine
 * runs here, so this checks what can be checked without one: every YAML parses; every
 * Kubernetes object validates against the Kubernetes schemas (kubernetes-models) and names no
 * field they do not know; every variable, port, probe path, address and grace period a
 * container gives its cell is one the cell really reads and agrees with the config the cell
 * ends up with (its config file with that environment applied by the cell's own code); the
 * build context holds what the build bundles; and the image's exact command line (ENTRYPOINT + CMD, its ENV, then cell-a's pod environment) runs
 * from the checkout as a process, becomes ready, passes the image's health check and stops
 * with exit 0 on SIGTERM.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Namespace, Secret, Service } from 'kubernetes-models/v1';
import { parse as parseYaml } from 'yaml';
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig, type CellConfig } from '../assembly/config.js';
import { secretSettingsOf, weakSecretProblems } from '../assembly/secret-strength.js';
import { loadOrCreatePeerKey } from '../mesh/peer-key-file.js';
import { cleanEnv } from './cli-process.js';
import {
  DEPLOY_DIR,
  cellServerGetRoutes,
  deployYamlFiles,
  dockerStages,
  documentedCellOptions,
  effectiveCellConfig,
  imageRuntime,
} from './deploy-files.js';
import { Cleanup, freePort, REPO_ROOT } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A parsed manifest: free-form JSON, read by the checks below. */
type Json = Record<string, any>;

const IMAGE = imageRuntime(dockerStages(readFileSync(join(DEPLOY_DIR, 'Dockerfile'), 'utf8')));
const YAML_FILES = deployYamlFiles();
const OPTIONS = documentedCellOptions();
const PLACEHOLDER = /^REPLACE-ME\b/;

/** The names that are no variable the cell reads. */
function unknownVariables(names: Iterable<string>): string[] {
  return [...names].filter((name) => !OPTIONS.has(name));
}

const DEFAULTS = parseCellConfig({ tenants: [{ id: 't', secret: 'defaults-0123456789abcdefghijklmnopq' }], mesh: { clusterSecret: 'defaults-0123456789abcdefghijklmnopq' } });

// ---------------------------------------------------------------------------------------------
// Kubernetes

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/StatefulSet': StatefulSet,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

const KUBERNETES = YAML_FILES.filter((file) => file.path.startsWith('deploy/kubernetes/')).flatMap((file) => file.documents.map((object) => ({ file: file.path, object: object as Json })));
const objectsOf = (kind: string): Json[] => KUBERNETES.filter(({ object }) => object['kind'] === kind).map(({ object }) => object);
const SECRETS = new Map(objectsOf('Secret').map((secret) => [secret['metadata'].name as string, secret['stringData'] as Record<string, string>]));
const WORKLOADS = [...objectsOf('StatefulSet'), ...objectsOf('Deployment')];
const CELL_WORKLOADS = WORKLOADS.filter((workload) => cellContainerOf(workload) !== undefined);

function cellContainerOf(workload: Json): Json | undefined {
  return (workload['spec'].template.spec.containers as Json[]).find((container) => String(container['image']).startsWith('cellmesh:'));
}

/** Whether a label selector (matchLabels or a Service's plain map) selects these labels. */
function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

/** A field of no schema: the validator ignores it, so put a value no type accepts there and see. */
const PROBE = Symbol('unknown-field-probe');

/** The paths of fields the object's schema does not know (kubernetes-models ignores those). */
function unknownFields(Model: new (data: never) => { validate(): void }, object: Json): string[] {
  const unknown: string[] = [];
  const rejects = (path: Array<string | number>): boolean => {
    const probe = structuredClone(object);
    let parent: Json = probe;
    for (const step of path.slice(0, -1)) parent = parent[step] as Json;
    parent[path.at(-1)!] = PROBE;
    const pointer = `/${path.map((step) => String(step).replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;
    try {
      new Model(probe as never).validate();
      return false;
    } catch (error) {
      return ((error as { errors?: Array<{ instancePath: string }> }).errors ?? []).some((problem) => problem.instancePath === pointer);
    }
  };
  const visit = (value: unknown, path: Array<string | number>): void => {
    if (Array.isArray(value)) value.forEach((item, index) => visit(item, [...path, index]));
    else if (typeof value === 'object' && value !== null) {
      for (const [key, child] of Object.entries(value)) {
        if (rejects([...path, key])) visit(child, [...path, key]);
        else unknown.push([...path, key].join('.'));
      }
    }
  };
  visit(object, []);
  return unknown;
}

/** A cell container's environment as the pod would have it, over the image's ENV. */
function podEnvironment(container: Json, pod: { name: string; ip: string }): Record<string, string> {
  const env: Record<string, string> = { ...IMAGE.env };
  for (const entry of (container['env'] ?? []) as Json[]) {
    const from = entry['valueFrom'];
    if (from === undefined) env[entry['name']] = String(entry['value']);
    else if (from.fieldRef?.fieldPath === 'status.podIP') env[entry['name']] = pod.ip;
    else if (from.fieldRef?.fieldPath === 'metadata.name') env[entry['name']] = pod.name;
    else if (from.secretKeyRef !== undefined) {
      const value = SECRETS.get(from.secretKeyRef.name)?.[from.secretKeyRef.key];
      if (value === undefined) throw new Error(`${entry['name']}: no key ${from.secretKeyRef.key} in a Secret ${from.secretKeyRef.name} of secrets.example.yaml`);
      env[entry['name']] = value;
    } else throw new Error(`${entry['name']}: a valueFrom this test does not know`);
  }
  return env;
}

/** The file at `path` in a container, from the Secret volume mounted over it. */
function mountedSecretFile(workload: Json, container: Json, path: string): string {
  const mount = (container['volumeMounts'] as Json[]).find((candidate) => dirname(path) === candidate['mountPath']);
  const volume = (workload['spec'].template.spec.volumes as Json[]).find((candidate) => candidate['name'] === mount?.['name']);
  const text = SECRETS.get(volume?.['secret']?.secretName)?.[basename(path)];
  if (text === undefined) throw new Error(`${workload['metadata'].name}: ${path} is not a file of a Secret volume of secrets.example.yaml`);
  return text;
}

interface KubernetesCell {
  readonly container: Json;
  readonly env: Record<string, string>;
  /** The cell's config file as written. */
  readonly file: Json;
  readonly config: CellConfig;
}

function kubernetesCell(workload: Json): KubernetesCell {
  const container = cellContainerOf(workload)!;
  const env = podEnvironment(container, { name: `${workload['metadata'].name}-0`, ip: '10.1.2.3' });
  const text = mountedSecretFile(workload, container, env['CELLMESH_CONFIG']!);
  return { container, env, file: parseYaml(text) as Json, config: effectiveCellConfig(parseYaml(text) as Json, env) };
}

/** Where a DNS name of the cluster leads: a StatefulSet's pod, or a Service's selected pods. */
function podsNamed(host: string): { labels: Array<Record<string, string>>; ports: Json[] } {
  const pod = /^([a-z0-9-]+)-(\d+)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/.exec(host);
  const service = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/.exec(host);
  const inNamespace = (object: Json, namespace: string | undefined): boolean => object['metadata'].namespace === namespace;
  if (pod !== null) {
    const [, set, , serviceName, namespace] = pod;
    const statefulSet = objectsOf('StatefulSet').find((candidate) => candidate['metadata'].name === set && candidate['spec'].serviceName === serviceName && inNamespace(candidate, namespace));
    if (statefulSet === undefined) return { labels: [], ports: [] };
    return { labels: [statefulSet['spec'].template.metadata.labels], ports: (statefulSet['spec'].template.spec.containers as Json[]).flatMap((container) => container['ports'] ?? []) };
  }
  if (service !== null) {
    const found = objectsOf('Service').find((candidate) => candidate['metadata'].name === service[1] && inNamespace(candidate, service[2]));
    if (found === undefined) return { labels: [], ports: [] };
    const selected = WORKLOADS.filter((workload) => selects(found['spec'].selector, workload['spec'].template.metadata.labels));
    return { labels: selected.map((workload) => workload['spec'].template.metadata.labels), ports: found['spec'].ports };
  }
  return { labels: [], ports: [] };
}

test('every YAML file in deploy/ parses without a warning', () => {
  // deployYamlFiles throws on any syntax error or warning; this names the files it read.
  expect(YAML_FILES.map((file) => file.path)).toEqual([
    'deploy/compose.yaml',
    'deploy/compose/cell-a.yaml',
    'deploy/compose/cell-b.yaml',
    'deploy/compose/cell-c.yaml',
    'deploy/kubernetes/cell-a.yaml',
    'deploy/kubernetes/cell-b.yaml',
    'deploy/kubernetes/cell-c.yaml',
    'deploy/kubernetes/disruption-budgets.yaml',
    'deploy/kubernetes/namespace.yaml',
    'deploy/kubernetes/secrets.example.yaml',
    'deploy/kubernetes/services.yaml',
  ]);
});

describe('Kubernetes manifests', () => {
  test('every object validates against the Kubernetes schemas and names no field they do not know', () => {
    expect(KUBERNETES.length).toBeGreaterThan(0);
    for (const { file, object } of KUBERNETES) {
      const Model = MODELS[`${object['apiVersion']}/${object['kind']}`];
      expect(Model, `${file}: ${object['apiVersion']} ${object['kind']} has no model in this test`).toBeDefined();
      expect(() => new Model!(object as never).validate(), `${file}: ${object['kind']} ${object['metadata']?.name}`).not.toThrow();
      expect(unknownFields(Model!, object), `${file}: ${object['kind']} ${object['metadata']?.name}`).toEqual([]);
      expect(object['metadata'].namespace ?? object['metadata'].name, `${file}: ${object['kind']} ${object['metadata'].name} namespace`).toBe('cellmesh');
    }
  });

  test('every cell container sets only variables the cell reads, and its ports, probes and grace period agree with its config', () => {
    const routes = cellServerGetRoutes();
    expect(CELL_WORKLOADS.length).toBeGreaterThanOrEqual(3);
    for (const workload of CELL_WORKLOADS) {
      const { container, file, config } = kubernetesCell(workload);
      const name = `${workload['kind']} ${workload['metadata'].name}`;
      const spec = workload['spec'].template.spec;
      expect(unknownVariables(((container['env'] ?? []) as Json[]).map((entry) => entry['name'] as string)), name).toEqual([]);
      // The image's command line, unchanged: the manifests configure through the environment and the file.
      expect(container['command'], name).toBeUndefined();
      expect(container['args'], name).toBeUndefined();
      // Pods listen on the pod's address, for devices and for the mesh.
      for (const variable of ['CELLMESH_HOST', 'CELLMESH_MESH_HOST']) {
        expect((container['env'] as Json[]).find((entry) => entry['name'] === variable)?.['valueFrom']?.fieldRef?.fieldPath, `${name} ${variable}`).toBe('status.podIP');
      }
      expect(config.mesh, `${name} is in the mesh`).toBeDefined();
      const ports = new Map((container['ports'] as Json[]).map((port) => [port['name'] as string, port['containerPort'] as number]));
      expect(Object.fromEntries(ports), name).toEqual({ cell: config.listen.port, mesh: config.mesh!.listen.port });
      for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const probe = container[kind] as Json | undefined;
        if (probe === undefined) continue;
        expect(routes.has(probe['httpGet'].path), `${name} ${kind} ${probe['httpGet'].path} is a route of the cell`).toBe(true);
        expect(ports.get(probe['httpGet'].port) ?? probe['httpGet'].port, `${name} ${kind} port`).toBe(config.listen.port);
      }
      expect(container['readinessProbe']?.httpGet.path, name).toBe('/v1/readyz');
      expect(container['livenessProbe']?.httpGet.path, name).toBe('/v1/healthz');
      expect(spec.terminationGracePeriodSeconds, `${name}: terminationGracePeriodSeconds above shutdownGraceSeconds`).toBeGreaterThan(config.shutdownGraceSeconds);
      // Kubernetes gives a pod CELLMESH_* variables for Services named cellmesh...
      // (CELLMESH_PORT=tcp://10.96.0.7:7400), which the cell would take for its settings.
      expect(spec.enableServiceLinks, `${name}: enableServiceLinks`).toBe(false);
      expect(spec.securityContext, name).toMatchObject({ runAsNonRoot: true, runAsUser: Number(IMAGE.user!.split(':')[0]) });
      expect(container['securityContext'], name).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
      for (const bound of ['requests', 'limits']) expect(Object.keys(container['resources'][bound]).sort(), `${name} resources.${bound}`).toEqual(['cpu', 'memory']);
      // The mesh key, the cell's identity: on a volume, never in the container's own (read-only) layer.
      const keyFile = config.mesh!.keyFile ?? (config.store.kind === 'level' ? join(config.store.directory, 'mesh-peer.key') : '');
      expect((container['volumeMounts'] as Json[]).some((mount) => keyFile.startsWith(`${mount['mountPath']}/`)), `${name}: its mesh key ${keyFile} lies on a volume`).toBe(true);
      if (file['store']?.kind === 'redis') {
        expect(workload['kind'], `${name}: the processes of a Redis cell keep nothing on disk`).toBe('Deployment');
      } else if (config.store.kind === 'level') {
        // The store, and the mesh key beside it, on the pod's own persistent volume.
        expect(workload['kind'], name).toBe('StatefulSet');
        expect(config.mesh!.keyFile, `${name}: the mesh key is the default one in the data directory`).toBeUndefined();
        const directory = config.store.directory;
        const mount = (container['volumeMounts'] as Json[]).find((candidate) => `${directory}/`.startsWith(`${candidate['mountPath']}/`));
        expect((workload['spec'].volumeClaimTemplates as Json[]).map((claim) => claim['metadata'].name), `${name}: the data directory is a claimed volume`).toContain(mount?.['name']);
      }
    }
  });

  test('bootstrap addresses, advertised URLs and the Redis URL lead to pods that listen there', () => {
    for (const workload of CELL_WORKLOADS) {
      const { env, file, config } = kubernetesCell(workload);
      const name = workload['metadata'].name as string;
      const ownLabels = workload['spec'].template.metadata.labels as Record<string, string>;
      const bootstrap = (env['CELLMESH_BOOTSTRAP'] ?? '').split(',').filter((address) => address !== '');
      expect(bootstrap.length, `${name} bootstraps through the other cells`).toBeGreaterThan(0);
      for (const address of bootstrap) {
        const [, host = '', port = ''] = /^\/dns4\/([^/]+)\/tcp\/(\d+)$/.exec(address) ?? [];
        const target = CELL_WORKLOADS.find((other) => podsNamed(host).labels.some((labels) => selects(other['spec'].selector.matchLabels, labels)));
        expect(target, `${name}: bootstrap ${address} is a cell's pod`).toBeDefined();
        expect(target, `${name}: bootstrap ${address} is another cell`).not.toBe(workload);
        expect(Number(port), `${name}: bootstrap ${address} port`).toBe(kubernetesCell(target!).config.mesh!.listen.port);
      }
      for (const url of [config.mesh!.advertise.ws, config.mesh!.advertise.http]) {
        const parsed = new URL(url!);
        const reached = podsNamed(parsed.hostname);
        expect(reached.labels.length > 0 && reached.labels.every((labels) => selects(ownLabels, labels) && selects(labels, ownLabels)), `${name}: ${url} leads to this cell only`).toBe(true);
        const port = reached.ports.find((candidate) => (candidate['port'] ?? candidate['containerPort']) === Number(parsed.port));
        expect(['cell', config.listen.port], `${name}: ${url} reaches the cell's port`).toContain(port?.['targetPort'] ?? port?.['containerPort']);
      }
      const redisUrl = file['store']?.redis?.url as string | undefined;
      if (redisUrl !== undefined) {
        const parsed = new URL(redisUrl);
        const redis = objectsOf('StatefulSet').find((candidate) => podsNamed(parsed.hostname).labels.some((labels) => selects(candidate['spec'].selector.matchLabels, labels)));
        const container = (redis?.['spec'].template.spec.containers as Json[] | undefined)?.[0];
        expect(container?.['image'], `${name}: ${redisUrl} is a Redis`).toBe('redis:7');
        expect((container!['ports'] as Json[]).map((port) => port['containerPort']), redisUrl).toContain(Number(parsed.port));
        expect(container!['args'].join(' '), 'Redis keeps the durable ack: every write fsynced').toMatch(/--appendonly yes .*--appendfsync always/);
      }
    }
  });

  test('services, budgets and policies select pods that exist; peers are found before they are ready', () => {
    const templates = WORKLOADS.map((workload) => workload['spec'].template as Json);
    for (const service of objectsOf('Service')) {
      const selected = templates.filter((template) => selects(service['spec'].selector, template['metadata'].labels));
      expect(selected.length, `Service ${service['metadata'].name} selects pods`).toBeGreaterThan(0);
      for (const port of service['spec'].ports as Json[]) {
        for (const template of selected) {
          const ports = (template['spec'].containers as Json[]).flatMap((container) => (container['ports'] ?? []) as Json[]);
          expect(ports.some((candidate) => candidate['name'] === port['targetPort'] || candidate['containerPort'] === port['targetPort']), `Service ${service['metadata'].name} port ${port['name']}`).toBe(true);
        }
      }
    }
    for (const budget of objectsOf('PodDisruptionBudget')) {
      expect(templates.some((template) => selects(budget['spec'].selector.matchLabels, template['metadata'].labels)), `PodDisruptionBudget ${budget['metadata'].name}`).toBe(true);
    }
    for (const policy of objectsOf('NetworkPolicy')) {
      expect(templates.some((template) => selects(policy['spec'].podSelector.matchLabels, template['metadata'].labels)), `NetworkPolicy ${policy['metadata'].name}`).toBe(true);
    }
    for (const cell of CELL_WORKLOADS.filter((workload) => workload['kind'] === 'StatefulSet')) {
      const peers = objectsOf('Service').find((service) => service['metadata'].name === cell['spec'].serviceName);
      expect(peers?.['spec'], `${cell['metadata'].name}: its serviceName is a headless Service publishing not-ready pods`).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
      expect(selects(peers!['spec'].selector, cell['spec'].template.metadata.labels)).toBe(true);
    }
    // Every cell process, LevelDB or Redis, is under some disruption budget.
    for (const template of CELL_WORKLOADS.map((workload) => workload['spec'].template as Json)) {
      expect(objectsOf('PodDisruptionBudget').some((budget) => selects(budget['spec'].selector.matchLabels, template['metadata'].labels)), JSON.stringify(template['metadata'].labels)).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Compose

const COMPOSE = YAML_FILES.find((file) => file.path === 'deploy/compose.yaml')!.documents[0] as Json;
const composeServices = Object.entries(COMPOSE['services'] as Record<string, Json>);
const COMPOSE_CELLS = composeServices.filter(([, service]) => String(service['image']).startsWith('cellmesh:'));

/** An env file's variables; a file kept out of git is read from its committed `.example`. */
function envFile(path: string): Record<string, string> {
  const file = join(DEPLOY_DIR, existsSync(join(DEPLOY_DIR, `${path}.example`)) ? `${path}.example` : path);
  return Object.fromEntries(
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => /^[A-Z_][A-Z0-9_]*=/.test(line))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
}

function composeCell(service: Json): { env: Record<string, string>; fileEnv: Record<string, string>; text: string; config: CellConfig } {
  const fileEnv = Object.assign({}, ...((service['env_file'] ?? []) as string[]).map(envFile)) as Record<string, string>;
  const env = { ...IMAGE.env, ...fileEnv, ...(service['environment'] as Record<string, string>) };
  const secret = /^\/run\/secrets\/(.+)$/.exec(env['CELLMESH_CONFIG'] ?? '')?.[1];
  const text = readFileSync(join(DEPLOY_DIR, COMPOSE['secrets'][secret!].file as string), 'utf8');
  return { env, fileEnv, text, config: effectiveCellConfig(parseYaml(text) as Json, env) };
}

/** The services a name on the compose network reaches: the service of that name, or those with that alias. */
function composeServicesNamed(host: string): string[] {
  return composeServices.filter(([name, service]) => name === host || ((service['networks']?.default?.aliases ?? []) as string[]).includes(host)).map(([name]) => name);
}

describe('compose file', () => {
  test('three cells, one of them two processes on a Redis; each sets only variables the cell reads, with ports and grace that agree with its config', () => {
    const cellIds = COMPOSE_CELLS.map(([, service]) => composeCell(service).config.cell.id);
    expect(new Set(cellIds).size).toBe(3);
    expect(cellIds.length).toBe(4);
    for (const [name, service] of COMPOSE_CELLS) {
      const { env, fileEnv, text, config } = composeCell(service);
      expect(unknownVariables([...Object.keys(fileEnv), ...Object.keys(service['environment'])]), name).toEqual([]);
      expect(service['command'] ?? service['entrypoint'], `${name} runs the image's command line`).toBeUndefined();
      expect(config.mesh, name).toBeDefined();
      // Like a pod, on an address of its own, for devices and for the mesh.
      const address = service['networks']?.default?.ipv4_address as string | undefined;
      expect([config.listen.host, config.mesh!.listen.host], `${name} listens on its fixed address`).toEqual([address, address]);
      // Its store (LevelDB) and its mesh key on named volumes.
      const onVolume = (path: string): boolean => ((service['volumes'] ?? []) as string[]).some((volume) => path.startsWith(`${volume.split(':')[1]}/`));
      const keyFile = config.mesh!.keyFile ?? (config.store.kind === 'level' ? join(config.store.directory, 'mesh-peer.key') : '');
      expect(onVolume(keyFile), `${name}: its mesh key ${keyFile} lies on a volume`).toBe(true);
      if ((parseYaml(text) as Json)['store']?.kind !== 'redis' && config.store.kind === 'level') expect(onVolume(`${config.store.directory}/`), `${name}: its store on a volume`).toBe(true);
      expect((service['ports'] as string[]).map((port) => Number(port.split(':').at(-1))), name).toEqual([config.listen.port]);
      // The image's health check asks CELLMESH_HOST and CELLMESH_PORT (default 7400).
      expect(Number(env['CELLMESH_PORT'] ?? 7400), `${name}: the health check asks the cell's port`).toBe(config.listen.port);
      expect(Number(/^(\d+)s$/.exec(service['stop_grace_period'])?.[1]), `${name}: stop_grace_period above shutdownGraceSeconds`).toBeGreaterThan(config.shutdownGraceSeconds);
      for (const address of (env['CELLMESH_BOOTSTRAP'] ?? '').split(',').filter((entry) => entry !== '')) {
        const [, host = '', port = ''] = /^\/dns4\/([^/]+)\/tcp\/(\d+)$/.exec(address) ?? [];
        const targets = composeServicesNamed(host);
        expect(targets.length, `${name}: bootstrap ${address}`).toBeGreaterThan(0);
        for (const target of targets) {
          const other = composeCell(COMPOSE['services'][target]).config;
          expect(other.cell.id, `${name}: bootstrap ${address} is another cell`).not.toBe(config.cell.id);
          expect(Number(port), `${name}: bootstrap ${address} port`).toBe(other.mesh!.listen.port);
        }
      }
      for (const url of [config.mesh!.advertise.ws, config.mesh!.advertise.http]) {
        const parsed = new URL(url!);
        const reached = composeServicesNamed(parsed.hostname);
        expect(reached, `${name}: ${url}`).toContain(name);
        for (const target of reached) expect(composeCell(COMPOSE['services'][target]).config.cell.id, `${name}: ${url} leads to this cell only`).toBe(config.cell.id);
        expect(Number(parsed.port), url).toBe(config.listen.port);
      }
    }
  });

  test('the processes of the Redis cell share its config, name themselves apart and wait for a Redis that fsyncs every write', () => {
    const redisCells = COMPOSE_CELLS.filter(([, service]) => (parseYaml(composeCell(service).text) as Json)['store']?.kind === 'redis');
    expect(redisCells.map(([name]) => name)).toEqual(['cell-c-1', 'cell-c-2']);
    expect(new Set(redisCells.map(([, service]) => service['environment']['CELLMESH_CONFIG'])).size).toBe(1);
    expect(new Set(redisCells.map(([, service]) => service['environment']['CELLMESH_PROCESS_ID'])).size).toBe(2);
    // One mesh key for the cell: its processes share the volume it lies on.
    const keyVolumes = redisCells.map(([, service]) => {
      const keyFile = composeCell(service).config.mesh!.keyFile!;
      return ((service['volumes'] ?? []) as string[]).find((volume) => keyFile.startsWith(`${volume.split(':')[1]}/`))?.split(':')[0];
    });
    expect(keyVolumes[0], 'the mesh key of the Redis cell lies on a named volume').toBeDefined();
    expect(new Set(keyVolumes).size).toBe(1);
    for (const [name, service] of redisCells) {
      const url = new URL((parseYaml(composeCell(service).text) as Json)['store'].redis.url);
      const redis = COMPOSE['services'][url.hostname] as Json;
      expect(redis?.['image'], `${name}: ${url}`).toBe('redis:7');
      expect((redis['command'] as string[]).join(' ')).toMatch(/--appendonly yes .*--appendfsync always/);
      expect(service['depends_on'][url.hostname], name).toEqual({ condition: 'service_healthy' });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The Dockerfile, the placeholders, and the image's command line as a process

describe('image', () => {
  test('the Dockerfile builds the JavaScript and runs it with node as PID 1, as a non-root user, with a health check and the real ports', () => {
    const stages = dockerStages(readFileSync(join(DEPLOY_DIR, 'Dockerfile'), 'utf8'));
    expect(stages.map((stage) => stage.from)).toEqual(['node:20-bookworm-slim AS build', 'node:20-bookworm-slim']);
    expect(stages[0]!.instructions.filter((instruction) => instruction.keyword === 'RUN').map((instruction) => instruction.argument)).toContain('npm ci && npm prune --omit=dev');
    const copied = stages[1]!.instructions.filter((instruction) => instruction.keyword === 'COPY').map((instruction) => instruction.argument);
    expect(copied).toEqual(expect.arrayContaining(['--from=build /app/dist/ dist/', '--from=build /app/bin/ bin/', '--from=build /app/node_modules/ node_modules/']));
    expect(IMAGE.entrypoint).toEqual(['node', 'bin/cellmesh.js']);
    expect(IMAGE.cmd).toEqual(['cell']);
    expect(IMAGE.user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(IMAGE.exposedPorts).toEqual([DEFAULTS.listen.port, DEFAULTS.mesh!.listen.port]);
    expect(unknownVariables(Object.keys(IMAGE.env))).toEqual([]);
    expect(IMAGE.healthcheck?.command?.[0]).toBe('node');
    expect(existsSync(join(REPO_ROOT, IMAGE.healthcheck!.command![1]!)), 'the health check script').toBe(true);
    // Every data directory the manifests give a cell is the image's volume.
    const dataDirectories = [...CELL_WORKLOADS.map((workload) => kubernetesCell(workload).env), ...COMPOSE_CELLS.map(([, service]) => composeCell(service).env)].flatMap((env) => env['CELLMESH_DATA_DIR'] ?? []);
    expect(dataDirectories.length).toBeGreaterThan(0);
    for (const directory of dataDirectories) expect(IMAGE.volumes).toContain(directory);
    const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');
    expect(ignored, 'the image builds its own dependencies and dist/').toEqual(expect.arrayContaining(['node_modules', 'dist']));
  });

  test('the build context (the checkout less .dockerignore) holds everything the build bundles', async () => {
    const patterns = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((line) => line.trim() !== '' && !line.startsWith('#'))
      .map((pattern) => new RegExp(`^${pattern.replaceAll('.', '\\.').replaceAll('*', '[^/]*')}(/|$)`));
    const context = await cleanup.tempDir('cellmesh-build-context-');
    // Docker matches each pattern against the path from the context's root; a directory's match covers its content.
    cpSync(REPO_ROOT, context, { recursive: true, filter: (source) => !patterns.some((pattern) => pattern.test(relative(REPO_ROOT, source))) });
    expect(existsSync(join(context, 'node_modules')) || existsSync(join(context, 'dist')) || existsSync(join(context, 'test'))).toBe(false);
    // `npm ci` would install the dependencies; the checkout's stand in for them.
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(context, 'node_modules'));
    const run = (args: string[]): Promise<{ code: number | null; output: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, args, { cwd: context, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
        child.once('close', (code) => resolve({ code, output }));
      });
    const build = await run(['scripts/build.mjs']);
    expect(build.code, `the build in the context:\n${build.output}`).toBe(0);
    const version = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version as string;
    expect(await run([...IMAGE.entrypoint!.slice(1), '--version'])).toEqual({ code: 0, output: `${version}\n` });
  });

  test('the documented way to make a scaled cell\'s mesh key makes one the cell takes as it is', async () => {
    const guide = readFileSync(join(REPO_ROOT, 'docs', 'deploy.md'), 'utf8');
    const [, typeFlag = '', script = '', output = ''] = /^ {4}docker run --rm --entrypoint node \S+ (--input-type=module) -e "([^"]+)" > (\S+)$/m.exec(guide) ?? [];
    expect(script, 'docs/deploy.md gives the command that makes a mesh key').toContain('generateKeyPair');
    // The image's WORKDIR holds its node_modules, as the checkout does.
    const key = execFileSync(process.execPath, [typeFlag, '-e', script], { cwd: REPO_ROOT });
    const keyFile = join(await cleanup.tempDir('cellmesh-key-'), output);
    writeFileSync(keyFile, key, { mode: 0o600 });
    expect((await loadOrCreatePeerKey(keyFile)).type).toBe('Ed25519');
    expect(readFileSync(keyFile).equals(key), 'the key is read, not replaced').toBe(true);
  });

  test('every secret the examples give a cell is a marked placeholder that the cell refuses', () => {
    const configs = [...CELL_WORKLOADS.map((workload) => kubernetesCell(workload).config), ...COMPOSE_CELLS.map(([, service]) => composeCell(service).config)];
    const settings = configs.flatMap((config) => secretSettingsOf(config));
    expect(settings.length).toBeGreaterThanOrEqual(configs.length * 3);
    for (const setting of settings) expect(setting.value, setting.path).toMatch(PLACEHOLDER);
    expect(weakSecretProblems(settings, [])).toHaveLength(settings.length);
  });

  test('the image\'s command line with cell-a\'s pod environment runs from the checkout, becomes ready, passes the health check and stops with exit 0 on SIGTERM', async () => {
    const workload = objectsOf('StatefulSet').find((candidate) => candidate['metadata'].name === 'cell-a')!;
    const container = cellContainerOf(workload)!;
    const directory = await cleanup.tempDir('cellmesh-deploy-');
    // The pod's volumes, remapped into a temporary directory: its config file (placeholders
    // replaced by secrets, as an operator does) and its data volume.
    const remaps = new Map<string, string>();
    for (const mount of container['volumeMounts'] as Json[]) {
      const local = join(directory, mount['name']);
      mkdirSync(local, { recursive: true });
      remaps.set(mount['mountPath'], local);
      const volume = (workload['spec'].template.spec.volumes as Json[]).find((candidate) => candidate['name'] === mount['name']);
      for (const [file, text] of Object.entries(SECRETS.get(volume?.['secret']?.secretName) ?? {})) writeFileSync(join(local, file), withSecrets(text));
    }
    const remap = (value: string): string => {
      for (const [mountPath, local] of remaps) if (value === mountPath || value.startsWith(`${mountPath}/`)) return `${local}${value.slice(mountPath.length)}`;
      return value;
    };
    const pod = Object.fromEntries(Object.entries(podEnvironment(container, { name: 'cell-a-0', ip: '127.0.0.1' })).map(([name, value]) => [name, withSecrets(remap(value))]));
    // Free ports here instead of the pod's 7400 and 7500, which another process may hold.
    const env = { ...cleanEnv(pod), CELLMESH_PORT: String(await freePort()), CELLMESH_MESH_PORT: String(await freePort()) };
    const [command, ...args] = [...IMAGE.entrypoint!, ...IMAGE.cmd!];
    expect(command).toBe('node');
    // The image's WORKDIR holds what the checkout holds: bin/cellmesh.js and the dist/ it runs.
    expect(IMAGE.workdir).toBe('/app');
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    cleanup.add(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = `${stderr}${chunk}`.slice(-8_000)));
    child.stdout.resume();

    const base = `http://127.0.0.1:${env.CELLMESH_PORT}`;
    const readiness = container['readinessProbe'].httpGet.path as string;
    const deadline = Date.now() + 60_000;
    let ready = false;
    while (!ready && Date.now() < deadline && child.exitCode === null) {
      ready = await fetch(`${base}${readiness}`, { signal: AbortSignal.timeout(2_000) }).then((response) => response.status === 200, () => false);
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(ready, `the cell did not answer ${readiness} with 200; stderr:\n${stderr}`).toBe(true);
    for (const kind of ['startupProbe', 'livenessProbe']) expect((await fetch(`${base}${container[kind].httpGet.path}`)).status, kind).toBe(200);
    // The image's HEALTHCHECK, run as the container would run it.
    const [healthCommand, ...healthArgs] = IMAGE.healthcheck!.command!;
    expect(healthCommand).toBe('node');
    const health = spawn(process.execPath, healthArgs, { cwd: REPO_ROOT, env, stdio: 'ignore' });
    expect(await new Promise((resolve) => health.once('exit', resolve)), 'the image health check').toBe(0);
    // The mesh key lies in the data volume: the pod keeps its identity across restarts.
    expect(existsSync(join(remap(pod['CELLMESH_DATA_DIR']!), 'mesh-peer.key'))).toBe(true);

    child.kill('SIGTERM');
    expect(await exited, stderr).toEqual({ code: 0, signal: null });
  });
});

/** A config or value with each placeholder replaced by a secret of its own. */
function withSecrets(text: string): string {
  return text.replace(/REPLACE-ME[^\s"']*/g, () => randomBytes(33).toString('base64'));
}
