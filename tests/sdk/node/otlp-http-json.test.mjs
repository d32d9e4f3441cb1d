// The real OpenTelemetry JS SDK (@opentelemetry/sdk-node) exporting spans, log records and metric
// data points to a real pharos with the OTLP/HTTP JSON exporters. The test sends a number of items
// fixed in advance and asserts that pharos acknowledged, and counted in its processing stage,
// exactly that many for the test's tenants: no loss, no double counting.
//
// Witnesses compared:
//  * the numbers decided below;
//  * what the SDK really handed to each exporter and that every export succeeded (a wrapper around
//    the real exporter's export());
//  * every HTTP request the exporters made, seen on node's `http.client.request.start` diagnostics
//    channel: its path and its Content-Type, which must be application/json (pharos decodes the
//    body by that header, so an accepted request was JSON);
//  * pharos' counters: pharos_ingest_items_{received,accepted}_total, pharos_pipeline_items_total
//    and pharos_ingest_requests_total.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

// The SDK reads OTEL_* variables (endpoints, headers, protocol, sampler, OTEL_SDK_DISABLED...); the
// test configures everything explicitly. Cleared before any SDK object is built.
for (const name of Object.keys(process.env)) {
  if (name.startsWith('OTEL_')) delete process.env[name];
}

const { context, metrics, trace } = await import('@opentelemetry/api');
const { logs, SeverityNumber } = await import('@opentelemetry/api-logs');
const { NodeSDK } = await import('@opentelemetry/sdk-node');
const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
const { OTLPMetricExporter, AggregationTemporalityPreference } = await import(
  '@opentelemetry/exporter-metrics-otlp-http'
);
const { OTLPLogExporter } = await import('@opentelemetry/exporter-logs-otlp-http');
const { BatchSpanProcessor, AlwaysOnSampler } = await import('@opentelemetry/sdk-trace-base');
const { BatchLogRecordProcessor } = await import('@opentelemetry/sdk-logs');
const { PeriodicExportingMetricReader } = await import('@opentelemetry/sdk-metrics');
const { resourceFromAttributes } = await import('@opentelemetry/resources');

const PHAROS_BIN =
  process.env.PHAROS_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || '/root/.cache/pharos/target', 'debug', 'pharos');

const TRACES = 5;
const SPANS_PER_TRACE = 50; // a root and 49 children
const SPANS = TRACES * SPANS_PER_TRACE; // 250
const LOGS = 120;
// One collection (cumulative temporality: every series seen so far is reported each time):
//   counter sdk_test.requests, 3 attribute sets -> 3 points
//   histogram sdk_test.latency, 2 attribute sets -> 2 points
//   updowncounter sdk_test.inflight, 1 attribute set -> 1 point
//   observable gauge sdk_test.temperature, 2 observed attribute sets -> 2 points
const POINTS_PER_COLLECTION = 3 + 2 + 1 + 2;
// reader.forceFlush() collects and exports once; sdk.shutdown() shuts the reader down, which in
// this SDK collects and exports once more. The 24 h interval never fires during the test.
const COLLECTIONS = 2;
const POINTS = POINTS_PER_COLLECTION * COLLECTIONS; // 16

const TENANTS = {
  traces: 'node-http-json-traces',
  logs: 'node-http-json-logs',
  metrics: 'node-http-json-metrics',
};
const PATHS = { traces: '/v1/traces', logs: '/v1/logs', metrics: '/v1/metrics' };

// ---------------------------------------------------------------------------------------------
// pharos process

const READY = /pharos is ready otlp_grpc=(\S+) otlp_http=(\S+) api=(\S+) partitions=(\d+)/;

function startPharos(dataDir) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PHAROS_')));
  env.RUST_LOG ??= 'info';
  const proc = spawn(
    PHAROS_BIN,
    [
      'serve',
      '--data-dir', dataDir,
      '--set', 'api.listen=127.0.0.1:0',
      '--set', 'otlp.http.listen=127.0.0.1:0',
      '--set', 'otlp.grpc.listen=127.0.0.1:0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  const server = { proc, log: '', exit: null };
  server.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      server.exit = { code, signal };
      resolve(server.exit);
    });
  });
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pharos not ready after 30 s:\n${server.log}`)), 30_000);
    const onData = (chunk) => {
      server.log += chunk.toString('utf8');
      const m = server.log.replace(/\x1b\[[0-9;]*m/g, '').match(READY);
      if (m && !server.http) {
        [server.grpc, server.http, server.api] = [m[1], m[2], m[3]];
        server.partitions = Number(m[4]);
        clearTimeout(timer);
        resolve(server);
      }
    };
    // Both streams are drained for the whole run so that pharos never blocks on a full pipe.
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${PHAROS_BIN}: ${e.message} (build it with cargo build -p pharos, or set PHAROS_BIN)`));
    });
    server.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`pharos exited (code ${code}, signal ${signal}) before it was ready:\n${server.log}`));
    });
  });
  return ready;
}

function logTail(server, n = 30) {
  return server.log.split('\n').slice(-n).join('\n');
}

// ---------------------------------------------------------------------------------------------
// Prometheus text

function parsePrometheus(text) {
  const samples = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/);
    assert.ok(m, `unparseable metrics line: ${line}`);
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\"/g, '"').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function matching(samples, name, labels = {}) {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the sample with exactly these labels; 0 when the series does not exist yet. */
function valueOf(samples, name, labels) {
  const found = matching(samples, name, labels).filter(
    (s) => Object.keys(s.labels).length === Object.keys(labels).length,
  );
  assert.ok(found.length <= 1, `several samples for ${name} ${JSON.stringify(labels)}`);
  return found.length ? found[0].value : 0;
}

async function scrape(server) {
  const res = await fetch(`http://${server.api}/metrics`);
  assert.equal(res.status, 200);
  return parsePrometheus(await res.text());
}

/** Polls until the pipeline counter reached `expected` (or passed it) and every queue partition is
 * drained, then returns a snapshot taken after a short pause (a late duplicate would show). */
async function waitProcessed(server, signal, tenant, expected, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const samples = await scrape(server);
    const counted = valueOf(samples, 'pharos_pipeline_items_total', { signal, tenant });
    const depths = matching(samples, 'pharos_queue_depth_records');
    const drained = depths.length > 0 && depths.every((s) => s.value === 0);
    if (counted >= expected && drained) {
      await sleep(300);
      return scrape(server);
    }
    if (Date.now() > deadline) return samples;
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------
// SDK helpers

/** Wraps a real exporter's export() to record the items of each call and its result. */
function recordExports(exporter, countItems) {
  const calls = [];
  const inner = exporter.export.bind(exporter);
  exporter.export = (items, resultCallback) =>
    inner(items, (result) => {
      calls.push({ items: countItems(items), code: result.code, error: result.error?.message });
      resultCallback(result);
    });
  return calls;
}

const countPoints = (resourceMetrics) =>
  resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).reduce((n, m) => n + m.dataPoints.length, 0);

function assertExportsSucceeded(calls, expectedItems, what) {
  const failed = calls.filter((c) => c.code !== 0 /* ExportResultCode.SUCCESS */);
  assert.deepEqual(failed, [], `${what}: SDK exports that failed: ${JSON.stringify(failed)}`);
  const items = calls.reduce((n, c) => n + c.items, 0);
  assert.equal(items, expectedItems, `${what}: the SDK exported ${items}, the test meant ${expectedItems}`);
}

// ---------------------------------------------------------------------------------------------

let server;
let dataDir;
const httpRequests = []; // every outgoing node http request to pharos' OTLP/HTTP listener
const exportCalls = {};

function onRequestStart({ request }) {
  if (server && request.getHeader('host') === server.http) {
    httpRequests.push({
      method: request.method,
      path: request.path,
      contentType: String(request.getHeader('content-type')),
      tenant: request.getHeader('x-scope-orgid'),
    });
  }
}

before(async () => {
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'pharos-node-sdk-'));
  server = await startPharos(dataDir);
  diagnosticsChannel.subscribe('http.client.request.start', onRequestStart);
});

after(async () => {
  diagnosticsChannel.unsubscribe('http.client.request.start', onRequestStart);
  if (server && server.exit === null) {
    server.proc.kill('SIGKILL');
    await server.exited;
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('NodeSDK exports spans, log records and metric points over OTLP/HTTP JSON', async () => {
  const url = (signal) => `http://${server.http}${PATHS[signal]}`;
  const traceExporter = new OTLPTraceExporter({ url: url('traces'), headers: { 'X-Scope-OrgID': TENANTS.traces } });
  const logExporter = new OTLPLogExporter({ url: url('logs'), headers: { 'X-Scope-OrgID': TENANTS.logs } });
  const metricExporter = new OTLPMetricExporter({
    url: url('metrics'),
    headers: { 'X-Scope-OrgID': TENANTS.metrics },
    temporalityPreference: AggregationTemporalityPreference.CUMULATIVE,
  });
  exportCalls.traces = recordExports(traceExporter, (spans) => spans.length);
  exportCalls.logs = recordExports(logExporter, (records) => records.length);
  exportCalls.metrics = recordExports(metricExporter, countPoints);

  const metricReader = new PeriodicExportingMetricReader({
    exporter: metricExporter,
    exportIntervalMillis: 24 * 3600 * 1000,
  });
  const sdk = new NodeSDK({
    autoDetectResources: false,
    resource: resourceFromAttributes({ 'service.name': 'pharos-sdk-test-node' }),
    sampler: new AlwaysOnSampler(),
    spanProcessors: [new BatchSpanProcessor(traceExporter, { maxExportBatchSize: 64, scheduledDelayMillis: 100 })],
    logRecordProcessors: [
      // sdk-logs 0.2xx takes one options object (exporter included), unlike BatchSpanProcessor.
      new BatchLogRecordProcessor({ exporter: logExporter, maxExportBatchSize: 25, scheduledDelayMillis: 100 }),
    ],
    metricReaders: [metricReader],
  });
  sdk.start();

  // Spans: 5 traces of a root and 49 children.
  const tracer = trace.getTracer('pharos.sdk-tests.node');
  for (let t = 0; t < TRACES; t++) {
    const root = tracer.startSpan(`root-${t}`, { attributes: { 'trace.index': t } });
    const ctx = trace.setSpan(context.active(), root);
    for (let i = 0; i < SPANS_PER_TRACE - 1; i++) {
      const child = tracer.startSpan(`child-${t}-${i}`, { attributes: { 'child.index': i } }, ctx);
      child.addEvent('work', { step: i });
      child.end();
    }
    root.end();
  }

  // Log records.
  const logger = logs.getLogger('pharos.sdk-tests.node');
  for (let i = 0; i < LOGS; i++) {
    const warn = i % 3 === 0;
    logger.emit({
      severityNumber: warn ? SeverityNumber.WARN : SeverityNumber.INFO,
      severityText: warn ? 'WARN' : 'INFO',
      body: `record ${i}`,
      attributes: { 'record.index': i },
    });
  }

  // Metrics.
  const meter = metrics.getMeter('pharos.sdk-tests.node'); // the MeterProvider NodeSDK registered
  const requests = meter.createCounter('sdk_test.requests');
  const latency = meter.createHistogram('sdk_test.latency', { unit: 'ms' });
  const inflight = meter.createUpDownCounter('sdk_test.inflight');
  meter.createObservableGauge('sdk_test.temperature').addCallback((result) => {
    result.observe(21.5, { room: 'a' });
    result.observe(19, { room: 'b' });
  });
  const record = (round) => {
    for (const route of ['/a', '/b', '/c']) requests.add(1 + round, { route });
    for (const method of ['GET', 'POST']) latency.record(12.5 * (round + 1), { method });
    inflight.add(2 - round, { pool: 'main' });
  };
  record(0);
  await metricReader.forceFlush();
  assert.deepEqual(exportCalls.metrics.map((c) => c.items), [POINTS_PER_COLLECTION]);
  record(1);

  await sdk.shutdown(); // flushes spans and logs, collects and exports metrics a second time

  assert.deepEqual(
    exportCalls.metrics.map((c) => c.items),
    Array(COLLECTIONS).fill(POINTS_PER_COLLECTION),
    'one metrics export at forceFlush and one at shutdown',
  );
  assertExportsSucceeded(exportCalls.traces, SPANS, 'traces');
  assertExportsSucceeded(exportCalls.logs, LOGS, 'logs');
  assertExportsSucceeded(exportCalls.metrics, POINTS, 'metrics');
  assert.ok(exportCalls.traces.length >= Math.floor(SPANS / 64), 'spans went in several requests');
});

test('every exporter request was OTLP/HTTP JSON with the tenant header', () => {
  assert.ok(httpRequests.length > 0, 'no http request to pharos was seen');
  for (const r of httpRequests) {
    assert.equal(r.method, 'POST');
    assert.match(r.contentType, /^application\/json\b/, `request to ${r.path} was ${r.contentType}, not JSON`);
  }
  for (const signal of Object.keys(PATHS)) {
    const sent = httpRequests.filter((r) => r.path === PATHS[signal]);
    assert.equal(sent.length, exportCalls[signal].length, `${signal}: one HTTP request per SDK export call`);
    assert.ok(sent.every((r) => r.tenant === TENANTS[signal]), `${signal}: tenant header ${JSON.stringify(sent.map((r) => r.tenant))}`);
  }
});

for (const [signal, expected] of [['traces', SPANS], ['logs', LOGS], ['metrics', POINTS]]) {
  test(`pharos counted exactly ${expected} ${signal} items for ${TENANTS[signal]}`, async () => {
    const tenant = TENANTS[signal];
    const samples = await waitProcessed(server, signal, tenant, expected);
    const got = {
      received: valueOf(samples, 'pharos_ingest_items_received_total', { signal, tenant }),
      accepted: valueOf(samples, 'pharos_ingest_items_accepted_total', { signal, tenant }),
      rejected: matching(samples, 'pharos_ingest_items_rejected_total', { signal, tenant }).reduce((n, s) => n + s.value, 0),
      pipeline: valueOf(samples, 'pharos_pipeline_items_total', { signal, tenant }),
    };
    assert.deepEqual(got, { received: expected, accepted: expected, rejected: 0, pipeline: expected },
      `pharos log tail:\n${logTail(server)}`);
    for (const name of ['pharos_ingest_items_accepted_total', 'pharos_pipeline_items_total']) {
      const elsewhere = matching(samples, name, { signal }).filter((s) => s.labels.tenant !== tenant);
      assert.deepEqual(elsewhere, [], `${name}: ${signal} counted under other tenants`);
    }
    const requests = matching(samples, 'pharos_ingest_requests_total', { signal }).map((s) => ({
      protocol: s.labels.protocol,
      outcome: s.labels.outcome,
      value: s.value,
    }));
    assert.deepEqual(requests, [{ protocol: 'http/json', outcome: 'ok', value: exportCalls[signal].length }]);
  });
}

test('pharos exits 0 on SIGTERM', async () => {
  assert.equal(server.exit, null, `pharos exited early:\n${logTail(server)}`);
  server.proc.kill('SIGTERM');
  const exit = await Promise.race([server.exited, sleep(30_000, 'timeout', { ref: false })]);
  assert.notEqual(exit, 'timeout', `pharos did not stop within 30 s of SIGTERM:\n${logTail(server)}`);
  assert.deepEqual(exit, { code: 0, signal: null }, logTail(server));
});

test('pharos logged no warnings or errors', () => {
  // A healthy run with a well-formed client has none (e.g. the processors warn when an envelope's
  // decoded item count differs from its header).
  const problems = server.log
    .replace(/\x1b\[[0-9;]*m/g, '')
    .split('\n')
    .filter((line) => /^\S+\s+(WARN|ERROR)\s/.test(line));
  assert.deepEqual(problems, []);
});
